"""One training step, evaluation, and the arithmetic around them: no loop, no state.

The data set lives in memory as one float32 tensor (MNIST's 60,000 images are 188 MB), a
:class:`Split`; :mod:`mnistkit.training.loop` indexes batches out of it and calls
:func:`train_step`; evaluation runs in batches of ``EVAL_BATCH``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnistkit.recipes import Recipe
from mnistkit.training.speed import autocast

# Images per forward pass when evaluating (speed and memory, not maths): 256 keeps the
# activations in the CPU's caches; 2000 made evaluation 2.4x slower on the 2-core AVX2 CPU.
EVAL_BATCH = 256


@dataclass
class Split:
    """Images as float32 (N, 1, 28, 28) in [0, 1] and labels int64 (N,), on one device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


def to_split(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> Split:
    """uint8 images -> float32 / 255 once, on ``device``: every seed scaled pixels to [0, 1]."""
    return Split(x.to(device).float().div_(255.0), y.to(device))


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Steps in one epoch over ``n`` images: the last, smaller batch is kept (Keras)."""
    return math.ceil(n / batch_size)


def lr_at(recipe: Recipe, step: int, steps_per_epoch: int, total_steps: int, lr: float) -> float:
    """The learning rate for optimizer step ``step`` (from 0) under the recipe's schedule.

    Args:
        recipe: gives ``schedule`` (``"constant"`` or ``"onecycle"``) and ``schedule_kwargs``
            (``warmup_epochs``).
        step: the global step about to be taken.
        steps_per_epoch: steps in one epoch.
        total_steps: steps in the whole run.
        lr: the peak rate.

    Returns:
        The rate for this step.
    """
    if recipe.schedule == "constant":
        return lr
    if recipe.schedule != "onecycle":
        raise ValueError(f"unknown schedule {recipe.schedule!r}")
    warmup = int(recipe.schedule_kwargs.get("warmup_epochs", 0) * steps_per_epoch)
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, total_steps - warmup)  # 0 -> 1 after warm-up
    return lr * (1 - frac)


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
    members: int = 1,
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
        members: how many nets' logits the model stacks in training (``models.Net.members``,
            a committee): each is scored against ``y``, the loss is the mean of their losses
            and the answer the mean of their logits.

    Returns:
        ``(loss, correct)`` as 0-d tensors, not synchronised: the batch's mean objective
        (cross-entropy plus penalty, what Keras's fit log shows) and its count of right answers.
    """
    with autocast(precision, x.device):
        logits = model(x).float()  # the loss in float32, whatever the forward ran in
    if logits.shape[0] != members * len(y):
        raise ValueError(f"{logits.shape[0]} rows of logits for {len(y)} labels: the model "
                         f"stacks {members} member(s)' logits, (members * B, 10)")  # fmt: skip
    targets = y.repeat(members) if members > 1 else y  # (members * B,)
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
