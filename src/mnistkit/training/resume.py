"""What a checkpoint holds, putting it back, and the checks a run makes before it trains.

A checkpoint (:func:`save_checkpoint`: one sealed file, written atomically) holds the model,
the optimizer (its hyperparameters and moments; the learning-rate schedule is a function of
the global step, ``engine.lr_at``, so the step is its whole state), the global torch RNG
(dropout), the shuffling generator (permutations and augmentation), the EMA weights, the
history, and, when written mid-epoch, the epoch's permutation, its running loss and count and
the step within it. Restoring all of it makes a resumed run on the CPU end with exactly the
weights and figures of a run that was never stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from mnistkit import rundir as runs
from mnistkit import sealed
from mnistkit.errors import MnistkitError, WriteError
from mnistkit.fileio import write_atomic
from mnistkit.runconfig import RESUME_FIELDS
from mnistkit.training.loop import Position
from mnistkit.training.speed import StepExtras


def fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The fields that decide a run's numbers, as JSON gives them back; ``epochs`` left out,
    since ``--resume --epochs N`` may extend a run."""
    fp = {k: config[k] for k in RESUME_FIELDS if k != "epochs"}
    fp["recipe_settings"] = {k: v for k, v in config["recipe_settings"].items() if k != "epochs"}
    return json.loads(json.dumps(fp))


class Checkpointer:
    """Saves and restores a run's checkpoint in ``out``.

    Args:
        out: the run directory.
        model, optimizer, generator, extras: the training state (``generator`` shuffles).
        device: where the model trains (its CUDA RNG is saved too).
        config: what ``config.json`` says now; its :func:`fingerprint` goes into each
            checkpoint so that a later ``config.json`` edited or damaged is noticed.
    """

    def __init__(self, out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 generator: torch.Generator, extras: StepExtras, device: torch.device,
                 config: dict[str, Any]):  # fmt: skip
        self.out, self.model, self.optimizer = out, model, optimizer
        self.generator, self.extras, self.device = generator, extras, device
        self.config = config

    def save(self, epoch: int, history: list[dict[str, Any]], position: Position | None = None
             ) -> None:  # fmt: skip
        """After ``epoch`` (from 1) finished, or in the middle of the next one (``position``)."""
        tensors = {"rng.torch": torch.get_rng_state(), "rng.shuffle": self.generator.get_state()}
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        ema, facts = self.extras.state()
        tensors.update(ema)
        state = {"epoch": epoch, "step": 0, "history": history, **facts,
                 "config": fingerprint(self.config)}  # fmt: skip
        if position is not None:
            tensors.update(position.tensors())
            state.update(step=position.step, seconds=position.seconds)
        save_checkpoint(self.out, self.model, self.optimizer, tensors, state)

    def save_position(self, position: Position, history: list[dict[str, Any]]) -> None:
        """Where ``Hooks.stop`` ended an epoch early."""
        self.save(position.epoch - 1, history, position)

    def restore(self, file_config: dict[str, Any], n: int, steps: int
                ) -> tuple[int, list[dict[str, Any]], Position | None]:  # fmt: skip
        """Load the checkpoint into the model, optimizer, RNGs and EMA.

        Args:
            file_config: ``config.json`` as read, checked against the checkpoint's copy.
            n, steps: training examples and steps per epoch, to check a mid-epoch position.

        Returns:
            ``(epochs done, history, position)``; ``position`` None at an epoch's end.

        Raises:
            MnistkitError: the checkpoint is unusable or ``config.json`` disagrees with it.
        """
        tensors, state = load_checkpoint(self.out, self.model, self.optimizer)
        where = str(self.out)
        theirs, ours = state.get("config"), fingerprint(file_config)
        if theirs != ours:
            keys = sorted(
                k for k in ours if not isinstance(theirs, dict) or theirs.get(k) != ours[k]
            )
            raise MnistkitError(
                f"config.json in {where!r} differs from its checkpoint in {', '.join(keys)}: it "
                f"was edited or damaged since; restore it or start a new run."
            )
        try:
            history = state["history"]
            if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
                raise ValueError("its history is not a list of epochs")
            torch.set_rng_state(tensors["rng.torch"])
            self.generator.set_state(tensors["rng.shuffle"])
            if "rng.cuda" in tensors and self.device.type == "cuda":
                torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
            self.extras.load_state(tensors, state)
            position = None
            if "epoch.perm" in tensors:
                position = Position.restore(tensors, state["epoch"] + 1, int(state["step"]),
                                            float(state.get("seconds", 0.0)), n, steps)  # fmt: skip
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise MnistkitError(
                f"the checkpoint in {where!r} cannot be resumed ({e}); start a new run."
            ) from None
        return state["epoch"], history, position


def check_room(out: Path, model: torch.nn.Module, n_train: int) -> None:
    """Before any training: ``out`` can be created and written, and its disk has room.

    The room needed is two checkpoints (the old one stays until the new one is complete) and
    the final weights: each checkpoint holds the weights up to four times (model, two
    optimizer moments, EMA) and an epoch's permutation (8 bytes per example).

    Raises:
        WriteError: one sentence naming the folder and what to do.
    """
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    need = 2 * (4 * weights + 8 * n_train) + weights + 2**20
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
        free = shutil.disk_usage(out).free
    except OSError as e:
        raise WriteError(
            f"cannot write to the run directory {out} ({e.strerror or e}); choose another --out."
        ) from None
    if free < need:
        if created:
            out.rmdir()
        raise WriteError(
            f"only {free / 2**20:.1f} MiB are free on the disk of {out}, and this run needs about "
            f"{need / 2**20:.1f} MiB for its checkpoints; free some space or choose another --out."
        )


# --- the checkpoint file -----------------------------------------------------------

CKPT_FORMAT = "mnistkit-checkpoint/2"  # 1 was a .safetensors + .json pair


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
    blob = {f"model.{k}": v for k, v in runs.state_tensors(model).items()}
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
    write_atomic(Path(path) / runs.CHECKPOINT, sealed.pack(blob, meta))


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
    file = Path(path) / runs.CHECKPOINT
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
        runs.load_weights(model, group["model."], file)
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
