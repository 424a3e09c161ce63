"""Temperature scaling: probabilities that mean what they say.

A network's softmax is rarely calibrated: ``fast`` trains with label smoothing 0.1 and says
"92 %" of digits it reads right 99 times in 100. Temperature scaling (Guo et al. 2017, "On
Calibration of Modern Neural Networks") divides the logits by one scalar ``T`` fitted to
minimise the negative log-likelihood on images the model did not train on; ``T > 1`` softens,
``T < 1`` sharpens. The order of the logits, hence every label and the accuracy, is unchanged.

:func:`mnistkit.train` fits ``T`` on the validation split, or else on the recipe's calibration
hold-out (``Recipe.calibration_split``), never on the test split, and stores it in
``config.json`` as ``temperature``; a run without one (trained before, or with nothing held
out) has ``T = 1``. Every path that reports a probability divides by it: the classifier's
torch and onnx backends (the exported graph includes the division), the server, and the report.

torch is imported inside :func:`fit_temperature`, so the onnx-only predictor can import this.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

# Bounds on T. They bite only when the held-out images hold no mistake at all (a tiny data set):
# the likelihood then keeps rising as T -> 0 and has no maximum. Real MNIST runs fit 0.5-1.5.
T_MIN, T_MAX = 0.05, 20.0


def temperature_of(config: Mapping[str, Any]) -> float:
    """The run's temperature from its ``config.json``; 1 for a run without one."""
    t = config.get("temperature", 1.0)
    return float(t) if isinstance(t, int | float) and math.isfinite(t) and t > 0 else 1.0


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature that minimises the mean cross-entropy of ``softmax(logits / T)``.

    The negative log-likelihood is convex in ``1 / T``, so it has one minimum; L-BFGS finds it
    in a few steps, on ``log T`` so that ``T`` stays positive, in float64.

    Args:
        logits: (N, K) of images the model did not train on.
        labels: (N,) their classes.

    Returns:
        ``T`` within [T_MIN, T_MAX]; 1.0 when there are no images.
    """
    import torch
    import torch.nn.functional as F

    if len(labels) == 0:
        return 1.0
    z = logits.detach().double().cpu()
    y = labels.detach().long().cpu()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    lo, hi = math.log(T_MIN), math.log(T_MAX)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=200, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.clamp(lo, hi).exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(math.exp(min(max(log_t.item(), lo), hi)))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean cross-entropy of ``softmax(logits / temperature)``, in numpy float64."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(z)), np.asarray(labels, np.int64)].mean())


def rescale(probabilities: np.ndarray, factor: float) -> np.ndarray:
    """``softmax(factor * log p)``: probabilities at another temperature, without the logits.

    ``softmax(z / T)`` has ``log p = z / T - c``, so ``rescale(p, T)`` gives back
    ``softmax(z)`` (the model before calibration) and ``rescale(p, 1 / T)`` the calibrated ones.
    """
    p = np.asarray(probabilities, np.float64)
    z = factor * np.log(np.maximum(p, np.finfo(np.float64).tiny))
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
