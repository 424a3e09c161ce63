"""The run directory (docs/run-directory.md): what a training run leaves behind, and reading it back.

::

    RUN_DIR/
      config.json              recipe, model name + kwargs, hyperparameters, seed, data, versions,
                               the temperature that calibrates the probabilities (``calibration``)
      model.safetensors        the final weights (safetensors: loading never executes code)
      metrics.json             METRIC_KEYS, nothing else
      history.csv              HISTORY_COLUMNS, one row per epoch
      checkpoint.safetensors   everything --resume needs, in one file (see save_checkpoint)
      .mnistkit.lock           empty; locked by the process training into the folder (hold)

Every file is written atomically (``fileio``): a process killed at any moment leaves the old
file or the new one. The checkpoint is one file, so its parts cannot come from two different
moments. Both safetensors files carry a SHA-256 seal (``sealed``) and ``config.json`` is checked
field by field (``runconfig``): loading a run never executes code, and a damaged or edited file
is refused with a sentence naming it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mnistkit import sealed
from mnistkit.errors import MnistkitError, WriteError
from mnistkit.fileio import is_temp, write_atomic, write_json_atomic, write_text_atomic
from mnistkit.models import FORMER_DEFAULTS, create_model
from mnistkit.runconfig import check_config

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
CKPT_FORMAT = "mnistkit-checkpoint/2"  # 1 was a .safetensors + .json pair
LOCK = ".mnistkit.lock"


@contextmanager
def hold(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Own the run directory while training writes it: a second process is refused at once.

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
        raise MnistkitError(
            f"{str(run_dir)!r} is in use by another mnistkit training; wait for it to end or "
            f"choose another --out."
        ) from None
    except OSError as e:
        raise WriteError(f"cannot lock the run directory {run_dir} ({e.strerror or e}).") from None
    try:
        yield
    finally:
        lock.release()


def holds_files(folder: Path) -> bool:
    """Whether a folder holds anything of a run: not counting temp files or the lock."""
    return folder.is_dir() and any(not is_temp(p.name) and p.name != LOCK for p in folder.iterdir())


def _state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
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
    path = Path(path)
    if set(metrics) != set(METRIC_KEYS):
        raise ValueError(
            f"metrics keys differ from the run directory format's: {sorted(set(metrics) ^ set(METRIC_KEYS))}"
        )
    write_json_atomic(path / CONFIG, config)
    write_atomic(path / WEIGHTS, sealed.pack(_state_tensors(model), {"model": config["model"]}))
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


def _read_json(path: Path, what: str) -> dict[str, Any]:
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
    return check_config(_read_json(path, "config"), path, resume=resume)


def read_metrics(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``metrics.json`` of a finished run; MnistkitError if the run is missing or unfinished."""
    return _read_json(Path(run_dir) / METRICS, "metrics")


def read_history(run_dir: str | os.PathLike[str]) -> list[dict[str, str]]:
    with open(Path(run_dir) / HISTORY, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
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
    _load_weights(model, tensors, Path(run_dir) / WEIGHTS)
    return model.to(device).eval(), config


# --- checkpoints -----------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    state: dict[str, Any],
) -> None:
    """Save everything a resumed run needs as one sealed safetensors file (no pickle).

    One file, written atomically, so a process killed at any moment leaves the previous
    checkpoint or this one, never a mix: the tensors hold the model (``model.*``), the
    optimizer's tensor state (``optim.*``) and the caller's ``tensors``; the header's metadata
    holds ``state`` as JSON, with the optimizer's hyperparameters and scalar state.

    Args:
        path: the run directory.
        model: the model now.
        optimizer: its optimizer.
        tensors: other tensors by name, each name with a prefix of its own (``rng.torch``,
            ``ema.fc.weight``, ``epoch.perm``...).
        state: JSON-able facts; must hold ``epoch`` (from 1) and ``step`` (within it).
    """
    blob = {f"model.{k}": v for k, v in _state_tensors(model).items()}
    sd = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in sd["state"].items():
        for k, v in pstate.items():
            if isinstance(v, torch.Tensor):
                blob[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    for name, v in tensors.items():
        if name.startswith(("model.", "optim.")) or name in blob:
            raise ValueError(f"checkpoint tensor name {name!r} is taken")
        blob[name] = v.detach().cpu().contiguous()
    payload = dict(state, optimizer={"param_groups": sd["param_groups"], "scalars": scalars})
    meta = {"format": CKPT_FORMAT, "state": json.dumps(payload)}
    write_atomic(Path(path) / CHECKPOINT, sealed.pack(blob, meta))


def load_checkpoint(
    path: str | os.PathLike[str], model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore model and optimizer in place from :func:`save_checkpoint`'s file.

    Returns:
        ``(tensors, state)``: the caller's tensors, by the names it saved them under, and the
        JSON state (``epoch``, ``step``, ``history``...).

    Raises:
        MnistkitError: the file is missing, truncated, damaged, edited, of an older format, or
            of another model or optimizer.
    """
    file = Path(path) / CHECKPOINT
    tensors, meta = sealed.unpack(file, "checkpoint")
    try:
        if meta.get("format") != CKPT_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {CKPT_FORMAT!r}")
        state = json.loads(meta["state"])
        if not isinstance(state, dict) or type(state.get("epoch")) is not int:
            raise ValueError("no epoch in its state")
        group: dict[str, dict[str, torch.Tensor]] = {"model.": {}, "optim.": {}, "": {}}
        for k, v in tensors.items():
            prefix = next((p for p in ("model.", "optim.") if k.startswith(p)), "")
            group[prefix][k[len(prefix) :]] = v
        _load_weights(model, group["model."], file)
        opt_state: dict[int, dict[str, Any]] = {}
        for k, v in group["optim."].items():
            idx, name = k.split(".", 1)
            opt_state.setdefault(int(idx), {})[name] = v
        for idx, extra in state["optimizer"]["scalars"].items():
            opt_state.setdefault(int(idx), {}).update(extra)
        optimizer.load_state_dict(
            {"state": opt_state, "param_groups": state["optimizer"]["param_groups"]}
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise MnistkitError(
            f"{str(file)!r} is not a checkpoint this mnistkit can resume ({e}); start a new run."
        ) from None
    return group[""], state
