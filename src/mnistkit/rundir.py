"""The run directory (docs/run-directory.md): what a training run leaves behind, and reading it back.

::

    RUN_DIR/
      config.json              recipe, model name + kwargs, hyperparameters, seed, data, versions,
                               the temperature that calibrates the probabilities (``calibration``)
      model.safetensors        the final weights (safetensors: loading never executes code)
      metrics.json             METRIC_KEYS, nothing else
      history.csv              HISTORY_COLUMNS, one row per epoch
      checkpoint.safetensors   everything --resume needs, in one file (training.resume)
      .mnistkit.lock           empty; locked by the process training into the folder (hold)

Every file is written atomically (``fileio``): a process killed at any moment leaves the old
file or the new one. The checkpoint is one file, so its parts cannot come from two different
moments. Both safetensors files carry a SHA-256 seal (``sealed``) and ``config.json`` is checked
field by field (``runconfig``): loading a run never executes code, and a damaged or edited file
is refused with a sentence naming it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import struct
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistkit.errors import MnistkitError, WriteError
from mnistkit.fileio import is_temp, write_atomic, write_json_atomic, write_text_atomic
from mnistkit.runconfig import check_config

if TYPE_CHECKING:
    import torch

METRIC_KEYS = (
    "recipe", "dataset", "epochs", "seed", "device", "threads", "test_accuracy", "test_loss",
    "train_accuracy", "train_loss", "val_accuracy", "train_seconds", "total_seconds",
    "examples_per_second",
    # Calibration (``calibration``): expected calibration error on the test split of the
    # probabilities the run reports (softmax(logits / T)) and of the model's own (T = 1), and
    # the test loss of the former. Runs trained before have none of the three.
    "test_ece", "test_ece_uncalibrated", "test_calibrated_loss",
)  # fmt: skip
HISTORY_COLUMNS = (
    "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
)  # fmt: skip
CONFIG, WEIGHTS, METRICS, HISTORY = (
    "config.json",
    "model.safetensors",
    "metrics.json",
    "history.csv",
)
CHECKPOINT = "checkpoint.safetensors"
LOCK = ".mnistkit.lock"
# state_dict entries that are not learned parameters (BatchNorm statistics).
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


@contextmanager
def hold(run_dir: str | os.PathLike[str], *, training: bool = True) -> Iterator[None]:
    """Own the run directory while a process writes it (a training, a report, an export): a
    second process is refused at once. ``training`` words the refusal for ``train --out``.

    The lock is an flock on ``LOCK`` (filelock), so the kernel drops it when the process dies,
    even by ``kill -9``. The empty file stays after release, as filelock keeps it on purpose:
    deleting a lock file lets a waiter that opened the old one and a newcomer that creates a
    new one both believe they hold it. :func:`holds_files` does not count it.

    Raises:
        MnistkitError: another process holds the directory.
        WriteError: the lock file cannot be created.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(Path(run_dir) / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        tail = " or choose another --out" if training else ""
        raise MnistkitError(f"{str(run_dir)!r} is in use by another mnistkit process (a training, "
                            f"a report or an export); wait for it to end{tail}.") from None  # fmt: skip
    except OSError as e:
        raise WriteError(f"cannot lock the run directory {run_dir} ({e.strerror or e}).") from None
    try:
        yield
    finally:
        lock.release()


def holds_files(folder: Path) -> bool:
    """Whether a folder holds anything of a run: not counting temp files or the lock."""
    return folder.is_dir() and any(not is_temp(p.name) and p.name != LOCK for p in folder.iterdir())


def state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights and buffers as dense CPU tensors, as the safetensors files hold them."""
    # contiguous(): a channels_last model's conv weights are strided; safetensors wants dense.
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_run(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    config: dict[str, Any],
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
) -> Path:
    """Write the run directory's four files; ``metrics`` must hold exactly METRIC_KEYS.

    Args:
        path: the run directory (created if missing).
        model: the trained model.
        config: what ``config.json`` holds; must name ``model`` and ``model_kwargs``.
        metrics: the figures of ``metrics.json``.
        history: one dict per epoch with HISTORY_COLUMNS.

    Returns:
        The run directory.
    """
    from mnistkit import sealed

    path = Path(path)
    if set(metrics) != set(METRIC_KEYS):
        raise ValueError(
            f"metrics keys differ from the run directory format's: {sorted(set(metrics) ^ set(METRIC_KEYS))}"
        )
    write_json_atomic(path / CONFIG, config)
    write_atomic(path / WEIGHTS, sealed.pack(state_tensors(model), {"model": config["model"]}))
    write_text_atomic(path / HISTORY, history_csv(history))
    # metrics.json last: its presence marks a finished run.
    write_json_atomic(path / METRICS, {k: metrics[k] for k in METRIC_KEYS})
    return path


def write_config(path: str | os.PathLike[str], config: dict[str, Any]) -> None:
    """Write ``config.json`` alone: the trainer does it first so a run describes itself."""
    write_json_atomic(Path(path) / CONFIG, config)


def history_csv(history: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_COLUMNS})
    return buf.getvalue()


def read_json(path: Path, what: str) -> dict[str, Any]:
    if path.parent.exists() and not path.parent.is_dir():
        raise MnistkitError(f"{str(path.parent)!r} is a file, not a run directory; give a "
                            f"folder written by `mnistkit train`.")  # fmt: skip
    if not path.parent.is_dir():
        raise MnistkitError(f"run directory {str(path.parent)!r} does not exist.")
    if not path.is_file():
        raise MnistkitError(
            f"{str(path.parent)!r} is not a mnistkit run directory (no {path.name}); "
            f"give a folder written by `mnistkit train`."
        )
    try:
        obj = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad UTF-8 or JSON
        raise MnistkitError(f"{str(path)!r} is not readable {what} JSON ({e}).") from None
    if not isinstance(obj, dict):
        raise MnistkitError(f"{str(path)!r} is not a mnistkit {what} file.")
    return obj


def read_config(run_dir: str | os.PathLike[str], resume: bool = False) -> dict[str, Any]:
    """``config.json`` of a run directory, every field validated (``runconfig.check_config``).

    Raises:
        MnistkitError: the file is missing, not JSON, foreign, or has a bad field; with
            ``resume``, also when a field that training needs is missing.
    """
    path = Path(run_dir) / CONFIG
    return check_config(read_json(path, "config"), path, resume=resume)


def read_metrics(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``metrics.json`` of a finished run; MnistkitError if the run is missing or unfinished."""
    return read_json(Path(run_dir) / METRICS, "metrics")


def read_history(run_dir: str | os.PathLike[str]) -> list[dict[str, str]]:
    with open(Path(run_dir) / HISTORY, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``tensors`` (read from ``path``) into ``model``; one clear error for another net."""
    expected = model.state_dict()
    shapes_ok = set(tensors) == set(expected) and all(
        tensors[k].shape == expected[k].shape for k in expected
    )
    if not shapes_ok:
        raise MnistkitError(
            f"{str(path)!r} holds weights of another architecture than its config's "
            f"{type(model).__name__} ({len(tensors)} tensors, expected {len(expected)})."
        )
    model.load_state_dict(tensors)


def load_model(
    run_dir: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a run's model from its config and weights.

    Args:
        run_dir: a directory written by :func:`mnistkit.train`.
        device: where to put the model.

    Returns:
        ``(model, config)``: the model in eval mode on ``device``, and ``config.json``.

    Raises:
        MnistkitError: the directory is missing or foreign, or ``model.safetensors`` is
            missing, truncated, or belongs to another architecture.
    """
    from mnistkit import sealed
    from mnistkit.models import FORMER_DEFAULTS, create_model

    config = read_config(run_dir)
    kwargs = config["model_kwargs"]
    # Every run written before the model defaults changed records the recipe field "loss",
    # since removed; its left-out arguments meant the defaults of that time.
    if "loss" in config.get("recipe_settings", {}):
        kwargs = {**FORMER_DEFAULTS.get(config["model"], {}), **kwargs}
    try:
        model = create_model(config["model"], **kwargs)
    except MnistkitError as e:
        raise MnistkitError(f"{str(Path(run_dir) / CONFIG)!r}: {e}; the file is damaged or was "
                            f"edited by hand.") from None  # fmt: skip
    tensors, _ = sealed.unpack(Path(run_dir) / WEIGHTS, "weights")
    load_weights(model, tensors, Path(run_dir) / WEIGHTS)
    return model.to(device).eval(), config


def read_header(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON header of ``model.safetensors`` (names, dtypes, shapes), read without torch:
    the format starts with a little-endian u64 header size, then the header. None if unreadable."""
    try:
        with open(Path(run_dir) / WEIGHTS, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(min(size, 100 << 20)))
    except (OSError, ValueError, struct.error, RecursionError):
        return None
    return header if isinstance(header, dict) else None


def count_parameters(run_dir: str | os.PathLike[str]) -> int | None:
    """Learned parameters in ``model.safetensors`` (BatchNorm statistics left out), or None."""
    header = read_header(run_dir)
    if header is None:
        return None
    return sum(
        math.prod(t["shape"])
        for name, t in header.items()
        if name != "__metadata__" and not name.endswith(BUFFER_SUFFIXES)
    )


def weights_sha256(run_dir: str | os.PathLike[str]) -> str:
    """SHA-256 of ``model.safetensors``: what an exported ONNX file records it was made from."""
    return hashlib.sha256((Path(run_dir) / WEIGHTS).read_bytes()).hexdigest()


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """A folder :func:`mnistkit.train` wrote (``config.json`` is its first file)."""
    return (Path(path) / CONFIG).is_file()


class RunDir:
    """One run directory, by path: the files of the module docstring, read and written here.

    JSON and CSV need no torch; weights are loaded by :meth:`load_model` (torch imported then).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def name(self) -> str:
        return self.path.name

    def is_run(self) -> bool:
        return is_run_dir(self.path)

    def is_finished(self) -> bool:
        """``metrics.json`` is written last: its presence marks a finished run."""
        return (self.path / METRICS).is_file()

    def config(self, resume: bool = False) -> dict[str, Any]:
        return read_config(self.path, resume=resume)

    def metrics(self) -> dict[str, Any]:
        return read_metrics(self.path)

    def history(self) -> list[dict[str, str]]:
        """Rows of ``history.csv`` as written (empty cell: no value); [] when there is none."""
        return read_history(self.path) if (self.path / HISTORY).is_file() else []

    def count_parameters(self) -> int | None:
        return count_parameters(self.path)

    def weights_sha256(self) -> str:
        return weights_sha256(self.path)

    def load_model(
        self, device: str | torch.device = "cpu"
    ) -> tuple[torch.nn.Module, dict[str, Any]]:
        return load_model(self.path, device)

    def hold(self, *, training: bool = True) -> AbstractContextManager[None]:
        return hold(self.path, training=training)
