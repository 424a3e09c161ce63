"""mnistkit: handwritten digit recognition on MNIST, from the Keras tutorials to your own digits.

The public API is small; the CLI (``mnistkit``) is a thin layer over it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# Idle OpenMP threads sleep instead of spinning. On a CPU shared with other processes a
# spinning thread steals the core its partner needs at every barrier: measured on the 2-core
# project machine under load ~6, a dense512 step took 341 ms with the default policy and
# 8 ms with PASSIVE. Read by libgomp when torch loads, so it must be set before that; a
# value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .data import load_data, load_tensors
from .errors import DataError, ImageError, ImageTooLargeError, MnistkitError
from .predict import Classifier, Prediction
from .preprocess import preprocess

if TYPE_CHECKING:
    from .runs import load_model
    from .training import Run, train

# Imported on first use, so `import mnistkit` and the CLI's start stay free of torch.
_LAZY = {"Run": ".training", "train": ".training", "load_model": ".runs"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'mnistkit' has no attribute {name!r}")


load = Classifier.load  # mnistkit.load("runs/fast").predict("digit.jpg")

__version__ = "0.1.0"

__all__ = [
    "Classifier",
    "DataError",
    "ImageError",
    "ImageTooLargeError",
    "MnistkitError",
    "Prediction",
    "Run",
    "__version__",
    "load",
    "load_data",
    "load_model",
    "load_tensors",
    "preprocess",
    "train",
]
