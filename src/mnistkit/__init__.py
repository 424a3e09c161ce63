"""mnistkit: handwritten digit recognition on MNIST, from the Keras tutorials to your own digits.

The public API is small; the CLI (``mnistkit``) is a thin layer over it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# How long an idle OpenMP thread spins before it sleeps (libgomp, read when torch loads, so
# set before that; a value the user set wins). Spinning is free on a quiet machine and ruinous
# on a busy one, where the spinner steals the core its partner needs at every barrier: half an
# epoch of `fast` on 2 cores took 2.2 s quiet but 77 s beside four busy processes at libgomp's
# default of 300,000 spins, 2.3-2.4 s and 4.3-6.2 s at 10,000 (benchmarks/RESULTS.md).
# GOMP_SPINCOUNT overrides the policy's count; PASSIVE stays for OpenMP runtimes without it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from mnistkit.data import load_data, load_tensors
from mnistkit.errors import DataError, ImageError, ImageTooLargeError, MnistkitError
from mnistkit.infer.predict import Classifier, Prediction
from mnistkit.infer.preprocess import preprocess
from mnistkit.version import __version__

if TYPE_CHECKING:
    from mnistkit.rundir import load_model
    from mnistkit.training.runner import Run, train

# Imported on first use, so `import mnistkit` and the CLI's start stay free of torch.
_LAZY = {"Run": "mnistkit.training.runner", "train": "mnistkit.training.runner",
         "load_model": "mnistkit.rundir"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mnistkit' has no attribute {name!r}")


# mnistkit.load("runs/fast").predict("digit.jpg"); mnistkit.load(): the default model, trained
# into the cache on first use (default_model).
load = Classifier.load


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
