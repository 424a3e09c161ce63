"""The epoch loop: a :class:`Trainer` holds what trains and calls its caller's :class:`Hooks`.

Figures are accumulated as tensors and read (``.item()``) once per epoch, or every
``REFRESH_STEPS`` steps when a progress bar is drawn, so the loop adds almost nothing per step
to what the model itself costs. Each epoch indexes a fresh permutation into the in-memory
:class:`~mnistkit.training.step.Split`, batch by batch, with no DataLoader and no workers.

The orchestration (data, run directory, resume) is :func:`mnistkit.training.runner.train`. (This
module is not called ``train.py``: importing a submodule ``mnistkit.train`` would rebind the
name ``mnistkit.train``, the public function, to the module.)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from mnistkit.errors import TrainingDiverged
from mnistkit.recipes import Recipe
from mnistkit.training.speed import StepExtras
from mnistkit.training.step import Split, evaluate, l1_params, lr_at, steps_per_epoch, train_step

if TYPE_CHECKING:
    from mnistkit.training.distributed import DataParallel

REFRESH_STEPS = 25  # how often a terminal progress bar reads the running loss (a sync point)
# How often one process checks that its running loss is finite (a sync point too, so not every
# step); under DDP the ranks check the summed loss at the end of each epoch, all at once.
FINITE_CHECK_STEPS = 25

History = list[dict[str, Any]]  # one row per finished epoch: rundir.HISTORY_COLUMNS
Probe = Callable[[Callable[[], nn.Module], int, float], None]


@dataclass
class Position:
    """Where an interrupted epoch stopped: enough for :meth:`Trainer.fit` to finish it exactly."""

    epoch: int  # the epoch in progress, from 1
    step: int  # its steps already taken
    perm: torch.Tensor  # its shuffle order (N,) int64
    loss_sum: torch.Tensor  # its running sum of batch loss x batch size, float32 0-d
    correct: torch.Tensor  # its running count of right answers, int64 0-d
    seconds: float  # its fit time so far

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"epoch.perm": self.perm, "epoch.loss_sum": self.loss_sum,
                "epoch.correct": self.correct}  # fmt: skip

    @classmethod
    def restore(cls, tensors: dict[str, torch.Tensor], epoch: int, step: int, seconds: float,
                n: int, steps: int) -> Position:  # fmt: skip
        """Rebuild from :meth:`tensors`; ValueError if it cannot belong to ``n`` examples."""
        perm = tensors.get("epoch.perm")
        if perm is None or perm.shape != (n,) or not 0 <= step < steps:
            raise ValueError(f"its epoch position (step {step} of {steps}) does not fit the data")
        return cls(epoch, step, perm, tensors["epoch.loss_sum"], tensors["epoch.correct"], seconds)


class Progress:
    """Keras-like progress: a tqdm bar per epoch on a terminal, else one line per epoch."""

    def __init__(self, epochs: int, steps: int, quiet: bool = False, stream: Any = None):
        self.epochs, self.steps, self.quiet = epochs, steps, quiet
        self.stream = stream or sys.stderr
        self.bar: Any = None

    def start(self, epoch: int) -> None:
        if not self.quiet and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.steps, desc=f"Epoch {epoch}/{self.epochs}", unit="step",
                            file=self.stream, dynamic_ncols=True, leave=True)  # fmt: skip

    def step(self, n: int, loss: float | None = None, acc: float | None = None) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}", accuracy=f"{acc:.4f}", refresh=False)

    def end(self, epoch: int, row: dict[str, Any]) -> None:
        figures = {"loss": row["train_loss"], "accuracy": row["train_accuracy"]}
        if row.get("val_loss") is not None:
            figures.update(val_loss=row["val_loss"], val_accuracy=row["val_accuracy"])
        if self.bar is not None:  # the finished bar stays on screen with the epoch's figures
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in figures.items()}, refresh=True)
            self.bar.close()
            self.bar = None
        elif not self.quiet:
            text = " - ".join(f"{k} {v:.4f}" for k, v in figures.items())
            print(f"epoch {epoch}/{self.epochs} - {row['seconds']:.1f}s - {text} - lr {row['lr']:.3g}",
                  file=self.stream, flush=True)  # fmt: skip


def _check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss_sum):
        raise TrainingDiverged(f"the training loss became {loss_sum.item()} in epoch {epoch} "
                               f"(by step {step})")  # fmt: skip


class Checkpoint(Protocol):
    """Where :meth:`Trainer.fit` leaves its state (:class:`mnistkit.training.resume.Checkpointer`)."""

    def save(self, epoch: int, history: History) -> None: ...

    def save_position(self, position: Position, history: History) -> None: ...


@dataclass
class Hooks:
    """What :meth:`Trainer.fit` tells its caller, and asks it, as training goes.

    Attributes:
        progress: bars or lines for a person; None is silent.
        checkpoint: ``save(epoch, history)`` after each epoch, and ``save_position(position,
            history)`` where ``stop`` ended an epoch early.
        probe: called after every step as ``probe(get_model, global_step, fit_seconds)`` (the
            benchmark's time-to-accuracy probe); ``get_model()`` returns the model as it would
            be saved now (with the EMA weights: a copy, so made only when the probe asks). The
            probe's own time is left out of the fit's seconds.
        stop: asked before every step; True ends the fit there, the EMA not yet applied (Ctrl-C:
            see :mod:`mnistkit.training.interrupt`).
    """

    progress: Progress | None = None
    checkpoint: Checkpoint | None = None
    probe: Probe | None = None
    stop: Callable[[], bool] | None = None


class Trainer:
    """A model, its optimizer and the recipe that trains them (epochs, batch size, rate,
    schedule, L1, smoothing, layout, precision, EMA, augmentation).

    Args:
        model, optimizer, recipe: what to train and how; ``recipe.batch_size`` examples per
            step (the last, smaller batch of an epoch is kept, as Keras does), peak rate
            ``recipe.lr``, up to epoch ``recipe.epochs``.
        generator: the shuffling RNG (its state is part of a checkpoint).
        parallel: under torchrun, the model's DDP wrapper: each rank trains on its slice of
            every global batch and figures are summed over ranks.
        extras: the recipe's EMA and augmentation; given by a caller that checkpoints the EMA,
            else made here.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe,
                 generator: torch.Generator, *, parallel: DataParallel | None = None,
                 extras: StepExtras | None = None):  # fmt: skip
        self.model, self.optimizer, self.recipe, self.generator = (
            model,
            optimizer,
            recipe,
            generator,
        )
        self.parallel = parallel
        self.extras = extras or StepExtras(model, recipe, generator)
        self.net = model if parallel is None else parallel.net  # trains the same parameters
        self.members = getattr(model, "members", 1)  # models.Net says; any other module is one net
        self.l1_weights = l1_params(model) if recipe.l1 else None
        self.layout = torch.channels_last if recipe.channels_last else torch.contiguous_format

    def fit(self, train: Split, val: Split | None, hooks: Hooks | None = None, *,
            start_epoch: int = 0, history: History | None = None,
            position: Position | None = None) -> History:  # fmt: skip
        """Train epochs ``start_epoch + 1 .. recipe.epochs``, shuffling each as Keras's fit does.

        Args:
            train, val: the data; ``val`` may be None.
            hooks: see :class:`Hooks`.
            start_epoch, history: the epochs a resumed run already has (``history`` is
                extended in place).
            position: continue epoch ``start_epoch + 1`` from here (a mid-epoch checkpoint)
                instead of drawing a new permutation.

        Returns:
            The history, one row per epoch; short of ``recipe.epochs`` rows when ``hooks.stop``
            ended it.

        Raises:
            TrainingDiverged: the running loss became NaN or infinite (checked every
                FINITE_CHECK_STEPS steps, and at each epoch's end before its checkpoint).
                ``history`` then holds the epochs finished before.
        """
        hooks = hooks or Hooks()
        history = [] if history is None else history
        fit_seconds = sum(row["seconds"] for row in history)
        for epoch in range(start_epoch + 1, self.recipe.epochs + 1):
            at = position if position is not None and position.epoch == epoch else None
            row = self.epoch(epoch, train, val, hooks, at, fit_seconds, history)
            if row is None:
                return history  # stopped, its position saved
            fit_seconds += row["seconds"]
            history.append(row)
            if hooks.progress is not None:
                hooks.progress.end(epoch, row)
            if hooks.checkpoint is not None:
                hooks.checkpoint.save(epoch, history)
        # After the last checkpoint, which keeps the raw weights and the EMA apart so that a run
        # killed before it wrote its model.safetensors can be resumed and finished.
        self.extras.finish(self.model)  # e.g. the EMA weights become the model's
        return history

    def epoch(self, epoch: int, train: Split, val: Split | None, hooks: Hooks,
              at: Position | None, fit_seconds: float, history: History
              ) -> dict[str, Any] | None:  # fmt: skip
        """Run one epoch (from ``at`` when given) and return its history row, or None when
        ``hooks.stop`` stopped it (its position then went to ``hooks.checkpoint``)."""
        rec, model, extras = self.recipe, self.model, self.extras
        bs, dev = rec.batch_size, train.x.device
        steps = steps_per_epoch(len(train), bs)
        progress = hooks.progress or Progress(rec.epochs, steps, quiet=True)
        t0 = time.perf_counter()
        model.train()
        progress.start(epoch)
        if at is not None:  # as it stood when interrupted
            t0 -= at.seconds
            perm, first = at.perm.to(dev), at.step
            loss_sum, correct = at.loss_sum.to(dev), at.correct.to(dev)
            progress.step(first)
        else:
            perm, first = torch.randperm(len(train), generator=self.generator).to(dev), 0
            loss_sum = torch.zeros((), device=dev)
            correct = torch.zeros((), dtype=torch.long, device=dev)
        seen = first * bs  # examples this process trained on this epoch
        for s in range(first, steps):
            if hooks.stop is not None and hooks.stop():  # steps 0..s-1 done: RNGs before step s
                if hooks.checkpoint is not None:
                    seconds = round(time.perf_counter() - t0, 3)
                    hooks.checkpoint.save_position(
                        Position(epoch, s, perm, loss_sum, correct, seconds), history
                    )
                return None
            if rec.schedule != "constant":
                rate = lr_at(rec, (epoch - 1) * steps + s, steps, rec.epochs * steps, rec.lr)
                for g in self.optimizer.param_groups:
                    g["lr"] = rate
            idx = perm[s * bs : (s + 1) * bs]
            batch: tuple[torch.Tensor, torch.Tensor] | None
            batch = extras.augment(train.x.index_select(0, idx)), train.y[idx]
            if self.parallel is not None and (batch := self.parallel.shard(*batch)) is None:
                continue  # fewer examples than ranks: every rank skips it
            xb, yb = batch[0].contiguous(memory_format=self.layout), batch[1]
            loss, right = train_step(self.net, self.optimizer, xb, yb, rec.l1, self.l1_weights,
                                     rec.label_smoothing, rec.precision, self.members)  # fmt: skip
            extras.after_step(model)
            loss_sum += loss * len(yb)
            correct += right
            seen += len(yb)
            if progress.bar is not None and (s + 1) % REFRESH_STEPS == 0:
                progress.step(REFRESH_STEPS, loss_sum.item() / seen, correct.item() / seen)
            if self.parallel is None and (s + 1) % FINITE_CHECK_STEPS == 0:
                _check_finite(loss_sum, epoch, s + 1)
            if hooks.probe is not None:  # timed out of the fit: t0 moves forward by its duration
                t_probe = time.perf_counter()
                hooks.probe(lambda: extras.eval_model(model), (epoch - 1) * steps + s + 1,
                            fit_seconds + t_probe - t0)  # fmt: skip
                t0 += time.perf_counter() - t_probe
        if progress.bar is not None:
            progress.step(steps % REFRESH_STEPS)
        if self.parallel is not None:
            loss_sum, correct = self.parallel.sum(loss_sum), self.parallel.sum(correct)
        _check_finite(loss_sum, epoch, steps)  # before the epoch's checkpoint, which it spares
        n = len(train)
        row: dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum.item() / n,
                               "train_accuracy": correct.item() / n, "val_loss": None,
                               "val_accuracy": None, "lr": self.optimizer.param_groups[0]["lr"]}  # fmt: skip
        if val is not None and len(val):
            score = evaluate if self.parallel is None else self.parallel.evaluate
            v = score(extras.eval_model(model), val)
            row["val_loss"], row["val_accuracy"] = v["loss"], v["accuracy"]
        row["seconds"] = round(time.perf_counter() - t0, 3)
        return row
