"""mnistkit: handwritten digit recognition on MNIST, from the Keras tutorials to your own digits.

The public API is small; the CLI (``mnistkit``) is a thin layer over it.
"""

from __future__ import annotations

from .data import load_data, load_tensors
from .errors import DataError, MnistkitError

__version__ = "0.1.0"

__all__ = ["DataError", "MnistkitError", "__version__", "load_data", "load_tensors"]
