"""The training engine: a pure ``train_step``, ``evaluate``, and the epoch loop ``fit``.

The data set lives in memory as one float32 tensor (MNIST's 60,000 images are 188 MB); an
epoch indexes a fresh permutation into it, batch by batch, with no DataLoader and no worker
processes. Figures are accumulated as tensors and read (``.item()``) once per epoch, or every
``REFRESH_STEPS`` steps when a progress bar is drawn, so the loop adds almost nothing per step
to what the model itself costs.

The orchestration (data, run directory, resume) is :func:`mnistkit.training.runner.train`. (This
module is not called ``train.py``: importing a submodule ``mnistkit.train`` would rebind the
name ``mnistkit.train``, the public function, to the module.)
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from mnistkit.recipes import Recipe
from mnistkit.training.speed import StepExtras, autocast

if TYPE_CHECKING:
    from mnistkit.training.distributed import DataParallel

EVAL_BATCH = 256  # images per forward pass when evaluating; see Recipe.eval_batch_size
REFRESH_STEPS = 25  # how often a terminal progress bar reads the running loss (a sync point)


@dataclass
class Split:
    """Images as float32 (N, 1, 28, 28) in [0, 1] and labels int64 (N,), on one device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Position:
    """Where an interrupted epoch stopped: enough for :func:`fit` to finish it exactly."""

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


def to_split(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> Split:
    """uint8 images -> float32 / 255 once, on ``device``: every seed scaled pixels to [0, 1]."""
    return Split(x.to(device).float().div_(255.0), y.to(device))


def epoch_size(n: int, batch_size: int, fraction: float = 1.0) -> tuple[int, int]:
    """``(examples, steps)`` of one epoch over ``n`` images that visits ``fraction`` of them
    (``Recipe.epoch_fraction``: the first part of each epoch's fresh shuffle)."""
    examples = max(1, min(n, round(n * fraction)))
    return examples, math.ceil(examples / batch_size)


def lr_at(recipe: Recipe, step: int, steps_per_epoch: int, total_steps: int, lr: float) -> float:
    """The learning rate for optimizer step ``step`` (from 0) under the recipe's schedule.

    Args:
        recipe: gives ``schedule`` and ``schedule_kwargs`` (``warmup_epochs``, ``gamma``,
            ``step_epochs``).
        step: the global step about to be taken.
        steps_per_epoch: steps in one epoch.
        total_steps: steps in the whole run.
        lr: the peak rate.

    Returns:
        The rate for this step.
    """
    kw = recipe.schedule_kwargs
    warmup = int(kw.get("warmup_epochs", 0) * steps_per_epoch)
    if recipe.schedule == "constant":
        return lr
    if recipe.schedule == "step":
        return lr * kw.get("gamma", 0.1) ** (
            step // int(kw.get("step_epochs", 1) * steps_per_epoch)
        )
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, total_steps - warmup)  # 0 -> 1 after warm-up
    if recipe.schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * frac))
    if recipe.schedule == "onecycle":
        return lr * (1 - frac)
    raise ValueError(f"unknown schedule {recipe.schedule!r}")


def l1_params(model: nn.Module) -> list[torch.Tensor]:
    named = dict(model.named_parameters())
    return [named[n] for n in getattr(model, "l1_weights", [])]


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    l1: float = 0.0,
    l1_weights: list[torch.Tensor] | None = None,
    label_smoothing: float = 0.0,
    precision: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on one batch.

    Args:
        model: in training mode.
        optimizer: over the model's parameters.
        x: images (B, 1, 28, 28) float32 in [0, 1].
        y: labels (B,) int64.
        l1: Keras's ``regularizers.l1``: ``l1 * sum|w|`` over ``l1_weights`` joins the loss.
        l1_weights: the kernels it applies to.
        label_smoothing: as ``F.cross_entropy`` takes it.
        precision: ``"bf16"`` runs the forward pass under bfloat16 autocast (see
            :func:`mnistkit.training.speed.autocast`); ``""`` keeps float32.

    Returns:
        ``(loss, correct)`` as 0-d tensors, not synchronised: the batch's mean objective
        (cross-entropy plus penalty, what Keras's fit log shows) and its count of right answers.
    """
    with autocast(precision, x.device):
        logits = model(x).float()  # the loss in float32, whatever the forward ran in
    # An ensemble (models.Members) returns each member's logits, (members * B, 10): every
    # member is scored against the labels, the loss is their mean, the answer their average.
    members = logits.shape[0] // len(y)
    targets = y.repeat(members) if members > 1 else y
    loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    if l1 and l1_weights:
        loss = loss + l1 * sum(w.abs().sum() for w in l1_weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    answers = logits.detach().reshape(members, len(y), -1).mean(0).argmax(1)
    return loss.detach(), (answers == y).sum()


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Logits (N, 10) of the model in eval mode, in batches of ``batch_size``."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, split: Split, batch_size: int = EVAL_BATCH) -> dict[str, Any]:
    """Mean cross-entropy and accuracy of the model (eval mode: no dropout) on a split.

    Returns:
        ``{"loss": float, "accuracy": float, "predictions": int64 tensor (N,) on the CPU}``.
        The loss is the plain cross-entropy, without any L1 penalty.
    """
    return logit_scores(predict_logits(model, split.x, batch_size), split.y)


def logit_scores(logits: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """:func:`evaluate`'s dict from logits (N, 10) and labels (N,)."""
    pred = logits.argmax(1)
    return {
        "loss": F.cross_entropy(logits, y).item(),
        "accuracy": (pred == y).float().mean().item(),
        "predictions": pred.cpu(),
    }


class Progress:
    """Keras-like progress: a tqdm bar per epoch on a terminal, else one line per epoch."""

    def __init__(self, epochs: int, steps: int, quiet: bool, stream: Any = None):
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


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    recipe: Recipe,
    train: Split,
    val: Split | None,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    start_epoch: int = 0,
    history: list[dict[str, Any]] | None = None,
    on_epoch_end: Callable[[int, list[dict[str, Any]]], None] | None = None,
    quiet: bool = False,
    probe: Callable[[Callable[[], nn.Module], int, float], None] | None = None,
    parallel: DataParallel | None = None,
    extras: StepExtras | None = None,
    position: Position | None = None,
    stop: Callable[[], bool] | None = None,
    on_stop: Callable[[Position, list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train for epochs ``start_epoch + 1 .. epochs``; shuffles every epoch as Keras's fit does.

    Args:
        model, optimizer, recipe: what to train and how (schedule, L1, smoothing, layout).
        train, val: the data; ``val`` may be None.
        epochs: the last epoch to run (a resumed run passes its start in ``start_epoch``).
        batch_size: examples per step; the last, smaller batch of an epoch is kept (Keras).
        lr: the peak learning rate.
        generator: the shuffling RNG (its state is part of a checkpoint).
        history: rows of the epochs already run, extended in place.
        on_epoch_end: called with (epoch, history) after each epoch: the checkpoint hook.
        quiet: no progress output.
        probe: called after every step as ``probe(get_model, global_step, fit_seconds)`` (the
            benchmark's time-to-accuracy probe); ``get_model()`` returns the model as it would
            be saved now (with the EMA weights: a copy, so made only when the probe asks).
            The probe's own time is left out of ``seconds``.
        parallel: under torchrun, the model's DDP wrapper: each rank trains on its slice of
            every global batch of ``batch_size`` and figures are summed over ranks.
        extras: the recipe's EMA and augmentation; given by a caller that checkpoints the
            EMA, else made here.
        position: continue epoch ``start_epoch + 1`` from here (a mid-epoch checkpoint)
            instead of drawing a new permutation.
        stop: asked before every step; when it answers True, ``on_stop`` gets the position
            and fit returns early, the EMA not yet applied (Ctrl-C: see ``interrupt``).
        on_stop: the mid-epoch checkpoint hook.

    Returns:
        The history: one dict per epoch with ``runs.HISTORY_COLUMNS``.
    """
    history = [] if history is None else history
    n, steps = epoch_size(len(train), batch_size, recipe.epoch_fraction)
    fmt = torch.channels_last if recipe.channels_last else torch.contiguous_format
    weights = l1_params(model) if recipe.l1 else None
    progress = Progress(epochs, steps, quiet)
    extras = extras or StepExtras(model, recipe, generator)
    fit_seconds = sum(row["seconds"] for row in history)
    net = model if parallel is None else parallel.net  # trains the same parameters
    score = evaluate if parallel is None else parallel.evaluate
    for epoch in range(start_epoch + 1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        progress.start(epoch)
        dev = train.x.device
        if position is not None and position.epoch == epoch:  # as it stood when interrupted
            t0 -= position.seconds
            perm, first = position.perm.to(dev), position.step
            loss_sum, correct = position.loss_sum.to(dev), position.correct.to(dev)
            progress.step(first)
        else:
            perm, first = torch.randperm(len(train), generator=generator).to(dev), 0
            loss_sum = torch.zeros((), device=dev)
            correct = torch.zeros((), dtype=torch.long, device=dev)
        seen = min(n, first * batch_size)  # examples this process trained on this epoch
        for s in range(first, steps):
            if stop is not None and stop():  # steps 0..s-1 done: the RNGs stand before step s
                if on_stop is not None:
                    seconds = round(time.perf_counter() - t0, 3)
                    on_stop(Position(epoch, s, perm, loss_sum, correct, seconds), history)
                return history
            if recipe.schedule != "constant":
                rate = lr_at(recipe, (epoch - 1) * steps + s, steps, epochs * steps, lr)
                for g in optimizer.param_groups:
                    g["lr"] = rate
            idx = perm[s * batch_size : min(n, (s + 1) * batch_size)]
            batch: tuple[torch.Tensor, torch.Tensor] | None
            batch = extras.augment(train.x.index_select(0, idx)), train.y[idx]
            if parallel is not None and (batch := parallel.shard(*batch)) is None:
                continue  # fewer examples than ranks: every rank skips it
            xb, yb = batch[0].contiguous(memory_format=fmt), batch[1]
            loss, right = train_step(net, optimizer, xb, yb, recipe.l1, weights,
                                     recipe.label_smoothing, recipe.precision)  # fmt: skip
            extras.after_step(model)
            loss_sum += loss * len(yb)
            correct += right
            seen += len(yb)
            if progress.bar is not None and (s + 1) % REFRESH_STEPS == 0:
                progress.step(REFRESH_STEPS, loss_sum.item() / seen, correct.item() / seen)
            if probe is not None:  # timed out of the fit: t0 moves forward by its duration
                t_probe = time.perf_counter()
                probe(lambda: extras.eval_model(model), (epoch - 1) * steps + s + 1,
                      fit_seconds + t_probe - t0)  # fmt: skip
                t0 += time.perf_counter() - t_probe
        if progress.bar is not None:
            progress.step(steps % REFRESH_STEPS)
        if parallel is not None:
            loss_sum, correct = parallel.sum(loss_sum), parallel.sum(correct)
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": loss_sum.item() / n,
            "train_accuracy": correct.item() / n,
            "val_loss": None,
            "val_accuracy": None,
            "lr": optimizer.param_groups[0]["lr"],
        }
        if val is not None and len(val):
            v = score(extras.eval_model(model), val, recipe.eval_batch_size)
            row["val_loss"], row["val_accuracy"] = v["loss"], v["accuracy"]
        row["seconds"] = round(time.perf_counter() - t0, 3)
        fit_seconds += row["seconds"]
        history.append(row)
        progress.end(epoch, row)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    # After the last checkpoint, which keeps the raw weights and the EMA apart so that a run
    # killed before it wrote its model.safetensors can be resumed and finished.
    extras.finish(model)  # e.g. the EMA weights become the model's
    return history
