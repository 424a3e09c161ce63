"""The default model: what ``mnistkit predict IMAGE``, ``mnistkit serve`` and ``mnistkit.load()``
use when no run directory is given.

It is the recommended recipe (:data:`RECIPE`) trained once, on first use, into the cache
(``<cache>/models/mnist-fast``; the cache is ``--cache-dir``, ``$MNISTKIT_CACHE`` or
``~/.cache/mnistkit``), and read from there afterwards. Two first uses at once (two shells, a
script's processes) take turns on a file lock: one trains, the others wait and then read its
run. Training goes into a temporary folder that is renamed into place once finished, so a
process killed while training leaves no half-written model (the next use trains again).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from mnistkit.data import default_cache_dir
from mnistkit.errors import MnistkitError, TrainingInterrupted
from mnistkit.rundir import RunDir

RECIPE = "fast"  # the least training time to >= 99 % test accuracy
DATASET = "mnist"
# A first use waits this long for another process training the model: `mnistkit predict`'s first
# use took 73 s on the 2-core Xeon while it was busy (31 s of fit, 4.6 s when quiet), fetching
# MNIST first if it is not cached.
LOCK_TIMEOUT_S = 1800.0

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"mnistkit: {message}", file=sys.stderr, flush=True)


def default_run_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the default model lies (trained or not)."""
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return root / "models" / f"{DATASET}-{RECIPE}"


def _ready(path: Path) -> bool:
    return RunDir(path).is_finished()  # train() writes metrics.json last, then a rename


def ensure_default_model(
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    onnx: bool = False,
    log: Log | None = _stderr,
) -> Path:
    """The default model's run directory, trained first if the cache has none.

    Args:
        cache_dir: the cache root (default :func:`mnistkit.data.default_cache_dir`).
        data_dir: where MNIST comes from if it is not cached yet (see :func:`mnistkit.data.load`).
        onnx: also export ``model.onnx`` into it if missing (the onnx backend).
        log: progress lines; None for none.

    Returns:
        The run directory.

    Raises:
        MnistkitError: no data to train on, an unwritable cache, or a lock held too long.
        KeyboardInterrupt: Ctrl-C while training; nothing is left half-written.
    """
    path = default_run_dir(cache_dir)
    if _ready(path) and (not onnx or (path / "model.onnx").is_file()):
        return path
    from filelock import FileLock, Timeout

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S):
            if not _ready(path):  # another process may have trained it while this one waited
                _train_into(path, cache_dir, data_dir, log)
            if onnx and not (path / "model.onnx").is_file():
                from mnistkit.infer.export import to_onnx

                to_onnx(path, data_dir=data_dir, cache_dir=cache_dir)
    except Timeout:
        raise MnistkitError(
            f"another process has been training the default model in {path} for over "
            f"{LOCK_TIMEOUT_S:.0f} s; if none is, delete {path}.lock."
        ) from None
    except PermissionError as e:
        raise MnistkitError(f"cannot write the default model into {path.parent} ({e.strerror}); "
                            f"give a writable --cache-dir.") from None  # fmt: skip
    return path


def _train_into(
    path: Path,
    cache_dir: str | os.PathLike[str] | None,
    data_dir: str | os.PathLike[str] | None,
    log: Log | None,
) -> None:
    from mnistkit.training.runner import train

    if log is not None:
        log(f"no default model yet: training the {RECIPE!r} recipe once into {path}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        run = train(RECIPE, out=tmp, dataset=DATASET, data_dir=data_dir, cache_dir=cache_dir,
                    quiet=log is None)  # fmt: skip
        if path.exists():  # an unfinished folder (no metrics.json) from some earlier version
            shutil.rmtree(path)
        os.replace(tmp, path)
    except TrainingInterrupted:
        raise KeyboardInterrupt from None  # its resume hint would name the temporary folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if log is not None:
        acc = run.metrics["test_accuracy"]
        log(f"default model ready: {RECIPE!r}, test accuracy {100 * acc:.2f} %, in {path}")
