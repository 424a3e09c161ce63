"""``mnistkit serve``: the HTTP API and the drawing page (FastAPI + uvicorn, extra ``serve``).

FastAPI, uvicorn and python-multipart are optional; they are imported only when the service is
built, and a missing one is a one-line error that says how to install them.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from mnistkit.errors import MnistkitError

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["create_app", "require_serve_deps"]

# import name -> distribution name
_DEPS = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}


def require_serve_deps() -> None:
    """Raise :class:`MnistkitError` naming the extra to install when a dependency is missing."""
    missing = [dist for mod, dist in _DEPS.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise MnistkitError(
            f"mnistkit serve needs {', '.join(missing)}: pip install 'mnistkit[serve]'."
        )


def create_app(classifier: Any, **options: Any) -> FastAPI:
    """The FastAPI app serving ``classifier``; see :func:`mnistkit.serve.app.create_app`."""
    require_serve_deps()
    from mnistkit.serve.app import create_app as _create_app

    return _create_app(classifier, **options)
