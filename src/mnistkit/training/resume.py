"""What a checkpoint holds, putting it back, and the checks a run makes before it trains.

A checkpoint (``runs.save_checkpoint``: one sealed file, written atomically) holds the model,
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
from mnistkit.errors import MnistkitError, WriteError
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
        runs.save_checkpoint(self.out, self.model, self.optimizer, tensors, state)

    def save_position(self, position: Position, history: list[dict[str, Any]]) -> None:
        """``fit``'s ``on_stop`` hook."""
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
        tensors, state = runs.load_checkpoint(self.out, self.model, self.optimizer)
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
