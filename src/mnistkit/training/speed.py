"""Training tricks the ``fast`` and ``best`` recipes switch on: bf16 autocast, weight EMA.

Both are off by default, so the seed recipes train exactly as before. The engine calls
:func:`autocast` around the forward pass and :class:`EMA` after each optimizer step when a
recipe asks for them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from mnistkit.errors import MnistkitError


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether bfloat16 autocast trains our nets faster than float32 here.

    On CUDA: compute capability 8.0 (Ampere) or newer runs bf16 in its tensor cores. On the
    CPU: never. Emulated on an AVX2-only CPU it was 4-9x slower per step than float32, and on
    an AVX-512 BF16 CPU without AMX tiles still slower: 11.95 against 9.79 ms a step for
    ``fast``'s net, 161 against 78 ms for ``best``'s (benchmarks/RESULTS.md). CPUs with AMX
    (``torch.cpu._is_amx_tile_supported()``) were not measured; a recipe can still ask for
    ``"bf16"``.
    """
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return False


def resolve_precision(kind: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` where :func:`native_bf16`, else ``""``; others unchanged."""
    if kind not in ("", "bf16", "auto"):
        raise ValueError(f"unknown precision {kind!r}; use 'bf16', 'auto' or ''")
    if kind == "auto":
        return "bf16" if native_bf16(device.type) else ""
    return kind


@contextlib.contextmanager
def autocast(kind: str, device: torch.device) -> Iterator[None]:
    """Mixed precision for the forward pass: ``"bf16"``, ``"auto"`` or ``""`` (off).

    bfloat16 keeps float32's exponent, so unlike float16 it needs no loss scaling. ``"auto"``
    uses it only where it was measured to pay (see :func:`native_bf16`: Ampere or newer
    GPUs). The weights and the optimizer stay float32.
    """
    if not resolve_precision(kind, device):
        yield
        return
    with torch.autocast(device.type, dtype=torch.bfloat16):
        yield


class EMA:
    """An exponential moving average of a model's weights (Polyak averaging).

    After each step, ``avg = decay * avg + (1 - decay) * value`` for every floating-point
    entry of the state dict, batch-norm running statistics included (as timm's ``ModelEmaV2``
    does); integer buffers are copied. Averaged weights sit in
    a flatter part of the loss surface and generalise a little better than the last iterate,
    most of all when the run ends before the learning rate reaches zero (airbench, tysam-code
    hlb-cifar10).

    Args:
        model: the model being trained.
        decay: per step; ``1 / (1 - decay)`` is the window in steps (0.99 -> ~100 steps).
        warmup: use ``min(decay, (1 + t) / (10 + t))`` at step ``t``, so the early random
            weights do not linger in a short run.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), not {decay}")
        self.decay, self.warmup, self.steps = decay, warmup, 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        t = self.steps
        d = min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay
        averages: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                averages.append(self.shadow[k])
                values.append(v.detach())
            else:  # integer buffers, e.g. BatchNorm's num_batches_tracked
                self.shadow[k].copy_(v)
        torch._foreach_lerp_(averages, values, 1.0 - d)  # one kernel launch for all

    @torch.no_grad()
    def load(self, shadow: dict[str, torch.Tensor], steps: int) -> None:
        """Restore a checkpointed average (:attr:`shadow` and :attr:`steps`) in place."""
        if shadow.keys() != self.shadow.keys():
            raise ValueError("the checkpoint's EMA holds other weights than the model")
        for k, s in self.shadow.items():
            s.copy_(shadow[k])
        self.steps = steps

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (in place, keeping its memory format)."""
        for k, v in model.state_dict().items():
            v.copy_(self.shadow[k])


class StepExtras:
    """What a recipe adds around each training step, for :class:`mnistkit.training.loop.Trainer`.

    Before the step, batch augmentation (``recipe.augment``, see :mod:`mnistkit.training.augment`);
    after it, the weight EMA (``recipe.ema``). With neither, every method is a no-op, so the
    seed recipes train exactly as they did.

    The EMA is part of a checkpoint (:meth:`state` and :meth:`load_state`), so a resumed run
    continues the very average an uninterrupted one would hold.
    """

    def __init__(self, model: nn.Module, recipe: Any, generator: torch.Generator | None):
        from mnistkit.training.augment import AugmentConfig

        try:
            self.aug = AugmentConfig(**recipe.augment) if recipe.augment else None
        except TypeError:
            known = ", ".join(f.name for f in dataclasses.fields(AugmentConfig))
            raise MnistkitError(
                f"recipe {recipe.name!r}: augment takes {known}, not {sorted(recipe.augment)}."
            ) from None
        self.ema = EMA(model, recipe.ema) if recipe.ema else None
        self.generator = generator

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        if self.aug is None:
            return x
        from mnistkit.training.augment import augment

        return augment(x, self.aug, self.generator)

    def after_step(self, model: nn.Module) -> None:
        if self.ema is not None:
            self.ema.update(model)

    def eval_model(self, model: nn.Module) -> nn.Module:
        """The model as it would be saved now: a copy holding the EMA weights, if any."""
        if self.ema is None:
            return model
        avg = copy.deepcopy(model)
        self.ema.copy_to(avg)
        return avg

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """What a checkpoint must keep: tensors (``ema.<name>``) and JSON facts."""
        if self.ema is None:
            return {}, {}
        return {f"ema.{k}": v for k, v in self.ema.shadow.items()}, {"ema_steps": self.ema.steps}

    def load_state(self, tensors: dict[str, torch.Tensor], facts: dict[str, Any]) -> None:
        """Restore :meth:`state`'s output; a checkpoint without an EMA leaves it as is."""
        if self.ema is not None and "ema_steps" in facts:
            shadow = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
            self.ema.load(shadow, int(facts["ema_steps"]))

    def finish(self, model: nn.Module) -> None:
        if self.ema is not None:
            self.ema.copy_to(model)
