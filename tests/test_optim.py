"""The Keras-rule optimizers against a NumPy implementation of Keras 2's update formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnistkit.errors import MnistkitError
from mnistkit.training.optim import KERAS_EPSILON, OPTIMIZERS, create_optimizer


def keras_rmsprop_np(p, grads, lr=0.001, rho=0.9, eps=1e-7):
    """keras/optimizers.py (2.x) RMSprop.get_updates without momentum, in float64."""
    a = np.zeros_like(p)
    for g in grads:
        a = rho * a + (1.0 - rho) * g**2
        p = p - lr * g / (np.sqrt(a) + eps)
    return p


def keras_adagrad_np(p, grads, lr=0.01, eps=1e-7, initial=0.0):
    """keras/optimizers.py (2.0-2.3) Adagrad.get_updates: a starts at K.zeros."""
    a = np.full_like(p, initial)
    for g in grads:
        a = a + g**2
        p = p - lr * g / (np.sqrt(a) + eps)
    return p


def run_torch(name, p0, grads, **kw):
    p = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = create_optimizer(name, [p], **kw)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return p.detach().numpy()


def sample(seed=0, steps=25, shape=(7, 5)):
    rng = np.random.default_rng(seed)
    # Gradients over several scales, tiny ones included: there eps's place (inside or
    # outside the square root) changes the step a lot.
    scales = 10.0 ** rng.integers(-9, 1, size=(steps, 1, 1))
    return rng.normal(size=shape), list(rng.normal(size=(steps, *shape)) * scales)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rmsprop_is_keras_rule(seed):
    p0, grads = sample(seed)
    ours = run_torch("rmsprop", p0, grads, lr=0.001)
    np.testing.assert_allclose(ours, keras_rmsprop_np(p0, grads), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adagrad_is_keras2_rule(seed):
    p0, grads = sample(seed)
    ours = run_torch("adagrad", p0, grads, lr=0.01)
    np.testing.assert_allclose(ours, keras_adagrad_np(p0, grads), rtol=1e-12, atol=1e-15)


def test_adagrad_initial_accumulator_as_tf_keras():
    p0, grads = sample(3)
    ours = run_torch("adagrad", p0, grads, lr=0.01, initial_accumulator=0.1)
    np.testing.assert_allclose(ours, keras_adagrad_np(p0, grads, initial=0.1), rtol=1e-12)


def test_eps_outside_the_square_root_matters():
    """The reference distinguishes the two rules, so the tests above are not vacuous."""
    p0, grads = sample(0)
    inside = p0.copy()
    a = np.zeros_like(p0)
    for g in grads:
        a = 0.9 * a + 0.1 * g**2
        inside = inside - 0.001 * g / np.sqrt(a + 1e-7)
    assert not np.allclose(inside, keras_rmsprop_np(p0, grads), rtol=1e-6)


def test_keras_defaults():
    p = [torch.nn.Parameter(torch.zeros(2))]
    rms = OPTIMIZERS["rmsprop"](p).param_groups[0]
    assert (rms["lr"], rms["alpha"], rms["eps"], rms["momentum"]) == (0.001, 0.9, KERAS_EPSILON, 0)
    ada = OPTIMIZERS["adagrad"](p).param_groups[0]
    assert (ada["lr"], ada["eps"], ada["initial_accumulator_value"]) == (0.01, 1e-7, 0.0)


def test_float32_matches_reference_closely():
    p0, grads = sample(4, steps=10)
    p = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float32))
    opt = create_optimizer("rmsprop", [p], lr=0.001)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
    np.testing.assert_allclose(
        p.detach().numpy(), keras_rmsprop_np(p0, grads), rtol=1e-5, atol=1e-6
    )


def test_unknown_optimizer_and_bad_lr():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(MnistkitError, match="adagrad, adamw, rmsprop, sgd"):
        create_optimizer("adam-ish", p, lr=0.1)
    with pytest.raises(MnistkitError, match="positive"):
        create_optimizer("sgd", p, lr=0.0)


def test_adamw_takes_the_fused_kernel_and_computes_the_same_update():
    """AdamW picks the fused kernel for CPU float parameters (``fused=False`` keeps the
    multi-tensor one), and both land on the same weights."""
    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(7)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(4)]
    results = []
    for fused in (None, False):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        opt = create_optimizer("adamw", params, 0.01, weight_decay=0.1, fused=fused)
        assert bool(opt.defaults["fused"]) is (fused is None)
        for step in grads:
            for p, g in zip(params, step, strict=True):
                p.grad = g.clone()
            opt.step()
        results.append(params)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)
