"""Optimizers with the update rules and defaults of the Keras the seeds ran.

Keras 2 (standalone ``keras`` 2.0-2.3, ``keras/optimizers.py``, and ``tf.keras`` of TF 2.x
without momentum) updates a weight ``p`` with gradient ``g`` as::

    RMSprop:  a <- rho * a + (1 - rho) * g**2           a starts at 0
              p <- p - lr * g / (sqrt(a) + eps)         rho = 0.9, eps = 1e-7, lr = 0.001
    Adagrad:  a <- a + g**2                             a starts at 0
              p <- p - lr * g / (sqrt(a) + eps)         eps = 1e-7, lr = 0.01

Note ``eps`` is added *outside* the square root, and ``eps = K.epsilon() = 1e-7``.

Adagrad's start value: Keras 2.0-2.3.1 (seed 004 imports ``keras.layers.convolutional`` and
prints "Using TensorFlow backend", i.e. standalone Keras 2) creates the accumulators with
``K.zeros``. The ``initial_accumulator_value=0.1`` default came with ``tf.keras``'s
OptimizerV2, together with a default rate of 0.001, not 0.01, so it is not seed 004's
optimizer; it is available as an argument.

PyTorch's ``RMSprop`` and ``Adagrad`` compute exactly these rules (``sqrt(state) + eps``,
accumulator start configurable); they differ from Keras only in their defaults (RMSprop
alpha 0.99 and eps 1e-8; Adagrad eps 1e-10). So the Keras optimizers here are PyTorch's with
Keras's constants, which keeps their fast multi-tensor ("foreach") kernels, and
``tests/test_optim.py`` checks them step by step against a NumPy implementation of the
formulas above.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from mnistkit.errors import MnistkitError

KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), the fuzz factor of every Keras 2 optimizer

Params = Iterable[torch.nn.Parameter]
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {}


def register_optimizer(
    fn: Callable[..., torch.optim.Optimizer],
) -> Callable[..., torch.optim.Optimizer]:
    """Register an optimizer factory ``fn(params, lr, **kw)`` under its name without ``keras_``."""
    OPTIMIZERS[fn.__name__.removeprefix("keras_")] = fn
    return fn


@register_optimizer
def keras_rmsprop(
    params: Params, lr: float = 0.001, rho: float = 0.9, eps: float = KERAS_EPSILON
) -> torch.optim.Optimizer:
    """Keras 2's ``RMSprop()``: rho 0.9, eps 1e-7 outside the square root, no momentum.

    Args:
        params: the parameters to update.
        lr: learning rate; Keras's default 0.001.
        rho: decay of the squared-gradient average (PyTorch calls it alpha).
        eps: added to ``sqrt(a)``.

    Returns:
        A ``torch.optim.RMSprop`` computing Keras's rule.
    """
    return torch.optim.RMSprop(params, lr=lr, alpha=rho, eps=eps, momentum=0.0, centered=False)


@register_optimizer
def keras_adagrad(
    params: Params, lr: float = 0.01, eps: float = KERAS_EPSILON, initial_accumulator: float = 0.0
) -> torch.optim.Optimizer:
    """Keras 2's ``Adagrad()``: rate 0.01, eps 1e-7 outside the square root, zero accumulators.

    Args:
        params: the parameters to update.
        lr: learning rate; Keras 2's default 0.01.
        eps: added to ``sqrt(a)``.
        initial_accumulator: the accumulators' start value (0 in Keras 2, 0.1 in tf.keras 2.x).

    Returns:
        A ``torch.optim.Adagrad`` computing Keras's rule.
    """
    return torch.optim.Adagrad(
        params, lr=lr, eps=eps, initial_accumulator_value=initial_accumulator, lr_decay=0.0
    )


@register_optimizer
def sgd(
    params: Params, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:  # fmt: skip
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
    )


@register_optimizer
def adamw(
    params: Params, lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0, eps: float = 1e-8, fused: bool | None = None,
) -> torch.optim.Optimizer:  # fmt: skip
    """``torch.optim.AdamW``, by default with its fused kernel where the parameters allow it.

    The fused kernel does the whole update in one pass over each parameter; it runs on CPU
    and CUDA float parameters, and ``fused=None`` picks it there (``False`` keeps the
    multi-tensor kernel). On the 2-core AVX2 CPU a step of the ``fast`` recipe's net took
    16.7 against 16.9 ms (best of three processes, ``benchmarks/explore_fast.py
    --allocator``): about 1 %, within the machine's noise.
    """
    params = list(params)
    if fused is None:
        fused = bool(params) and all(
            p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params
        )
    return torch.optim.AdamW(
        params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps, fused=fused
    )


def create_optimizer(name: str, params: Params, lr: float, **kwargs: Any) -> torch.optim.Optimizer:
    """Build a registered optimizer.

    Args:
        name: a key of :data:`OPTIMIZERS` (``rmsprop``, ``adagrad``, ``sgd``, ``adamw``).
        params: the parameters to update.
        lr: the learning rate.
        **kwargs: the factory's other arguments (``rho``, ``momentum``...).

    Returns:
        The optimizer.

    Raises:
        MnistkitError: unknown name (the message lists the valid ones) or bad arguments.
    """
    if name not in OPTIMIZERS:
        raise MnistkitError(
            f"unknown optimizer {name!r}; choose one of: {', '.join(sorted(OPTIMIZERS))}."
        )
    if not lr > 0:
        raise MnistkitError(f"the learning rate must be positive, not {lr}.")
    try:
        return OPTIMIZERS[name](params, lr=lr, **kwargs)
    except TypeError as e:
        raise MnistkitError(f"optimizer {name!r} does not take {kwargs}: {e}") from e
