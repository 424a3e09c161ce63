"""`import mnistkit` sets how long idle OpenMP threads spin, before torch (libgomp) loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "import os, sys, mnistkit; "
    "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
)


def _probe(**env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    return out.split()


def test_spin_count_is_set_before_torch_loads():
    # libgomp reads both variables once, when torch loads it: setting them later does nothing.
    assert _probe() == ["10000", "PASSIVE", "False"]


@pytest.mark.parametrize(
    ("name", "value"), [("GOMP_SPINCOUNT", "300000"), ("OMP_WAIT_POLICY", "ACTIVE")]
)
def test_a_value_the_user_set_wins(name, value):
    spin, policy, _ = _probe(**{name: value})
    assert {"GOMP_SPINCOUNT": spin, "OMP_WAIT_POLICY": policy}[name] == value
