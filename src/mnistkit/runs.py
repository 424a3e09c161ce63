"""The run directory (DESIGN.md): what a training run leaves behind, and reading it back.

::

    RUN_DIR/
      config.json              recipe, model name + kwargs, hyperparameters, seed, data, versions
      model.safetensors        the final weights (safetensors: loading never executes code)
      metrics.json             METRIC_KEYS, nothing else
      history.csv              HISTORY_COLUMNS, one row per epoch
      checkpoint.safetensors   model + optimizer tensors + RNG state at the end of the last epoch
      checkpoint.json          epoch, history, optimizer hyperparameters, for --resume

Every file is written atomically (``fileio``); the checkpoint's two files carry the same
epoch number, so a process killed between the two renames is detected on resume.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import MnistkitError
from .fileio import write_atomic, write_json_atomic, write_text_atomic
from .models import create_model

METRIC_KEYS = (
    "recipe", "dataset", "epochs", "seed", "device", "threads", "test_accuracy", "test_loss",
    "train_accuracy", "train_loss", "val_accuracy", "train_seconds", "total_seconds",
    "examples_per_second",
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
CKPT_TENSORS, CKPT_STATE = "checkpoint.safetensors", "checkpoint.json"


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
            f"metrics keys differ from DESIGN.md's: {sorted(set(metrics) ^ set(METRIC_KEYS))}"
        )
    write_json_atomic(path / CONFIG, config)
    write_atomic(
        path / WEIGHTS, st_save(_state_tensors(model), metadata={"model": config["model"]})
    )
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
    if not path.parent.is_dir():
        raise MnistkitError(f"run directory {str(path.parent)!r} does not exist.")
    if not path.is_file():
        raise MnistkitError(
            f"{str(path.parent)!r} is not a mnistkit run directory (no {path.name}); "
            f"give a folder written by `mnistkit train`."
        )
    try:
        obj = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MnistkitError(f"{str(path)!r} is not readable {what} JSON ({e}).") from e
    if not isinstance(obj, dict):
        raise MnistkitError(f"{str(path)!r} is not a mnistkit {what} file.")
    return obj


def read_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``config.json`` of a run directory; MnistkitError if it is missing or foreign."""
    config = _read_json(Path(run_dir) / CONFIG, "config")
    if not isinstance(config.get("model"), str) or not isinstance(config.get("model_kwargs"), dict):
        raise MnistkitError(f"{str(Path(run_dir) / CONFIG)!r} names no model; not a mnistkit run.")
    return config


def read_metrics(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``metrics.json`` of a finished run; MnistkitError if the run is missing or unfinished."""
    return _read_json(Path(run_dir) / METRICS, "metrics")


def read_history(run_dir: str | os.PathLike[str]) -> list[dict[str, str]]:
    with open(Path(run_dir) / HISTORY, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise MnistkitError(f"{str(path)!r} is missing; the run did not finish or was moved.")
    blob = path.read_bytes()
    try:
        from safetensors import safe_open  # metadata needs a file handle

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return st_load(blob), metadata
    except (SafetensorError, OSError, ValueError) as e:
        raise MnistkitError(f"{str(path)!r} is truncated or not a safetensors file ({e}).") from e


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
    model = create_model(config["model"], **config["model_kwargs"])
    tensors, _ = _read_safetensors(Path(run_dir) / WEIGHTS)
    _load_weights(model, tensors, Path(run_dir) / WEIGHTS)
    return model.to(device).eval(), config


# --- checkpoints -----------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: dict[str, torch.Tensor],
    state: dict[str, Any],
) -> None:
    """Save everything a resumed run needs: tensors as safetensors, the rest as JSON (no pickle).

    Args:
        path: the run directory.
        model: the model after the epoch.
        optimizer: its optimizer; tensor state goes to safetensors, the rest to JSON.
        rng: RNG states as uint8 tensors (``torch.get_rng_state()`` and friends).
        state: JSON-able facts; must hold ``epoch`` (the last finished one, from 1).
    """
    path = Path(path)
    tensors = {f"model.{k}": v for k, v in _state_tensors(model).items()}
    tensors.update({f"rng.{k}": v.cpu().contiguous() for k, v in rng.items()})
    sd = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in sd["state"].items():
        for k, v in pstate.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    epoch = str(state["epoch"])
    write_atomic(path / CKPT_TENSORS, st_save(tensors, metadata={"epoch": epoch}))
    payload = dict(state, optimizer={"param_groups": sd["param_groups"], "scalars": scalars})
    write_json_atomic(path / CKPT_STATE, payload)


def load_checkpoint(
    path: str | os.PathLike[str], model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore model and optimizer in place from :func:`save_checkpoint`'s files.

    Returns:
        ``(rng, state)``: the RNG tensors and the JSON state (``epoch``, ``history``...).

    Raises:
        MnistkitError: the files are missing, truncated, of another epoch or architecture.
    """
    path = Path(path)
    state = _read_json(path / CKPT_STATE, "checkpoint")
    tensors, metadata = _read_safetensors(path / CKPT_TENSORS)
    if metadata.get("epoch") != str(state.get("epoch")):
        raise MnistkitError(
            f"the checkpoint in {str(path)!r} is inconsistent (weights of epoch "
            f"{metadata.get('epoch')}, state of epoch {state.get('epoch')}); start a new run."
        )
    group = {"model.": {}, "rng.": {}, "optim.": {}}  # type: dict[str, dict[str, torch.Tensor]]
    for k, v in tensors.items():
        prefix = k[: k.index(".") + 1]
        group.setdefault(prefix, {})[k[len(prefix) :]] = v
    _load_weights(model, group["model."], path / CKPT_TENSORS)
    opt_state: dict[int, dict[str, Any]] = {}
    for k, v in group["optim."].items():
        idx, name = k.split(".", 1)
        opt_state.setdefault(int(idx), {})[name] = v
    for idx, extra in state["optimizer"]["scalars"].items():
        opt_state.setdefault(int(idx), {}).update(extra)
    optimizer.load_state_dict(
        {"state": opt_state, "param_groups": state["optimizer"]["param_groups"]}
    )
    return group["rng."], state
