"""``mnistkit`` in a subprocess, with the synthetic "tiny" data set, a test recipe and faults.

Run as ``python tests/train_driver.py ARGV...`` with:

- ``TINY_DATA_DIR``: a folder of the four synthetic IDX files, registered as data set "tiny";
- ``MNISTKIT_FAULT`` (optional), one of
  ``SIGINT@K`` / ``SIGTERM@K`` / ``SIGKILL@K``: the process sends itself the signal just
  before its K-th training step (from 0, counted in this process);
  ``KILLWRITE@N:F``: SIGKILL in the middle of its N-th atomic write (from 1), after writing
  the fraction F of the temp file (F=1: after the temp file is complete, before the rename);
  ``KILLRENAME@N``: SIGKILL right after its N-th atomic write's rename;
- ``MNISTKIT_STEP_SLEEP`` (optional): seconds to sleep in each step, so that a signal sent
  from outside lands during training.

The recipe ``resume-test`` exercises every piece of state a resume must restore: dropout (the
global RNG), augmentation (the shuffling generator), L1, label smoothing, a warm-up + cosine
schedule (the global step) and a weight EMA.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from mnistkit import data, fileio
from mnistkit.cli import main
from mnistkit.recipes import RECIPES, Recipe, get_recipe
from mnistkit.training import loop as engine


def resume_recipe() -> Recipe:
    return replace(get_recipe("seed-mlp-l1"), name="resume-test", epochs=3, batch_size=16,
                   lr=0.003, schedule="cosine", schedule_kwargs={"warmup_epochs": 0.5},
                   label_smoothing=0.05, ema=0.9, augment={"degrees": 10.0, "translate": 1.0})  # fmt: skip


def register_tiny(folder: Path) -> None:
    raw = {name: (folder / name).read_bytes() for name in data.RAW_NAMES.values()}
    data.DATASETS["tiny"] = data.Dataset(
        name="tiny", raw_sha256={n: hashlib.sha256(b).hexdigest() for n, b in raw.items()}
    )


def install_fault(spec: str) -> None:
    kind, _, arg = spec.partition("@")
    if kind in ("SIGINT", "SIGTERM", "SIGKILL"):
        sig, at, calls = getattr(signal, kind), int(arg), [0]
        real_step = engine.train_step

        def step(*args, **kwargs):  # type: ignore[no-untyped-def]
            if calls[0] == at:
                os.kill(os.getpid(), sig)
            calls[0] += 1
            return real_step(*args, **kwargs)

        engine.train_step = step  # type: ignore[assignment]
    elif kind in ("KILLWRITE", "KILLRENAME"):
        n, _, frac = arg.partition(":")
        at, writes = int(n), [0]
        real_write = fileio.write_atomic

        def write(path, blob):  # type: ignore[no-untyped-def]
            writes[0] += 1
            if writes[0] == at and kind == "KILLWRITE":
                path = Path(path)
                tmp = path.parent / f".{path.name}.killed.tmp"
                with open(tmp, "wb") as f:
                    f.write(blob[: int(len(blob) * float(frac))])
                os.kill(os.getpid(), signal.SIGKILL)
            real_write(path, blob)
            if writes[0] == at:  # KILLRENAME: the rename is done, nothing after it
                os.kill(os.getpid(), signal.SIGKILL)

        # Every module that writes run files took write_atomic from fileio by name.
        import mnistkit.rundir as runs

        fileio.write_atomic = write  # type: ignore[assignment]
        runs.write_atomic = write  # type: ignore[attr-defined]
    else:
        raise SystemExit(f"unknown fault {spec!r}")


def slow_steps(seconds: float) -> None:
    real_step = engine.train_step

    def step(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(seconds)
        return real_step(*args, **kwargs)

    engine.train_step = step  # type: ignore[assignment]


if __name__ == "__main__":
    register_tiny(Path(os.environ["TINY_DATA_DIR"]))
    RECIPES["resume-test"] = resume_recipe
    if os.environ.get("MNISTKIT_STEP_SLEEP"):
        slow_steps(float(os.environ["MNISTKIT_STEP_SLEEP"]))
    if os.environ.get("MNISTKIT_FAULT"):
        install_fault(os.environ["MNISTKIT_FAULT"])
    sys.exit(main(sys.argv[1:]))
