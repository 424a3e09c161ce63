"""Explore variants of a recipe: validation accuracy and fit time, one line per variant.

    .venv/bin/python benchmarks/explore_fast.py --set widths=8,16,32 --set lr=0.01 --seeds 2
    .venv/bin/python benchmarks/explore_fast.py --recipe best --set members=1 --seeds 2 --committee
    .venv/bin/python benchmarks/explore_fast.py --precision   # bf16 vs float32 step times
    .venv/bin/python benchmarks/explore_fast.py --order       # conv-BN-ReLU-pool vs conv-pool-BN-ReLU
    .venv/bin/python benchmarks/explore_fast.py --allocator   # glibc malloc as is vs keeping freed blocks; fused AdamW

Choices are made on a validation split carved from the training images (``--val-split``,
default 1/6 = 10,000 images), never on the test split, which this script does not print.
Each ``--set KEY=VALUE`` changes one field of the recipe (the keys in ``MODEL_KEYS`` go to
the model, the rest to :class:`mnistkit.recipes.Recipe`); several ``--set`` of one key run a grid.
Fit seconds are wall-clock and CPU seconds are this process's (all threads): on a shared
machine compare the CPU seconds, which other processes' load disturbs less.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from mnistkit import load_data
from mnistkit.bench.train import format_machine, machine_info
from mnistkit.recipes import get_recipe
from mnistkit.training.runner import train
from mnistkit.training.step import Split, predict_logits, to_split

MODEL_KEYS = {"widths", "tta", "depth", "dropout", "stem", "stem_kernel", "members"}


def validation_split(fraction: float) -> Split:
    """The images and labels ``train(val_split=fraction)`` holds out: the last of the 60,000."""
    (x, y), _ = load_data()
    n = int(round(len(y) * fraction))
    return to_split(torch.from_numpy(x[-n:].copy()).unsqueeze(1),
                    torch.from_numpy(y[-n:].astype("int64")), torch.device("cpu"))  # fmt: skip


def parse_value(text: str):
    try:
        value = json.loads(text if not ("," in text and "[" not in text) else f"[{text}]")
    except json.JSONDecodeError:
        return text
    return tuple(value) if isinstance(value, list) else value


def variants(recipe: str, sets: list[str]):
    """One recipe per combination of the ``--set`` values."""
    grid: dict[str, list] = {}
    for item in sets:
        key, _, value = item.partition("=")
        grid.setdefault(key, []).append(parse_value(value))
    base = get_recipe(recipe)
    for combo in itertools.product(*grid.values()):
        changes = dict(zip(grid, combo, strict=True))
        model_kw = {**base.model_kwargs, **{k: v for k, v in changes.items() if k in MODEL_KEYS}}
        rest = {k: v for k, v in changes.items() if k not in MODEL_KEYS}
        for key in ("schedule_kwargs", "optimizer_kwargs", "augment"):
            if isinstance(rest.get(key), str):
                rest[key] = json.loads(rest[key])
        yield changes, replace(base, model_kwargs=model_kw, **rest)


def time_precision(threads: int) -> None:
    """Step time of the fast net, float32 vs bf16 autocast, NCHW vs channels-last."""
    import torch.nn.functional as F

    from mnistkit.models import create_model

    torch.set_num_threads(threads)
    print("oneDNN bf16 in hardware:", torch.ops.mkldnn._is_mkldnn_bf16_supported())
    for bf16, cl in itertools.product((False, True), (False, True)):
        torch.manual_seed(0)
        fmt = torch.channels_last if cl else torch.contiguous_format
        # fast-cnn's former defaults, as this has always timed it: figures compare across runs.
        model = create_model("fast-cnn", widths=(16, 32, 64), stem="pool").to(memory_format=fmt)
        opt = torch.optim.Adam(model.parameters())
        x = torch.rand(256, 1, 28, 28).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (256,))

        def step(model=model, opt=opt, x=x, y=y, bf16=bf16):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        for _ in range(3):
            step()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(10):
            step()
        wall, cpu = (time.perf_counter() - t0) / 10, (time.process_time() - c0) / 10
        print(f"{'bf16' if bf16 else 'fp32'} {'channels-last' if cl else 'NCHW':13} "
              f"{1000 * wall:7.1f} ms/step wall  {1000 * cpu:7.1f} ms/step CPU")  # fmt: skip


def best_step_seconds(model, opt, x, y, steps: int, rounds: int, smoothing: float = 0.0) -> float:
    """Seconds per training step on one batch: the best of ``rounds - 1`` rounds of ``steps``
    steps, after one round of warm-up."""
    import torch.nn.functional as F

    best = float("inf")
    for rnd in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if rnd:
            best = min(best, (time.perf_counter() - t0) / steps)
    return best


def time_order(threads: int) -> None:
    """Step time of conv-BN-ReLU-pool blocks against conv-pool-BN-ReLU (``models.conv_pool_bn``)."""
    from torch import nn

    torch.set_num_threads(threads)

    def block(c_in: int, c_out: int, pool_first: bool) -> list[nn.Module]:
        conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        if pool_first:
            return [conv, nn.MaxPool2d(2), nn.BatchNorm2d(c_out), nn.ReLU()]
        return [conv, nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]

    for (a, b, c), pool_first in itertools.product(((16, 32, 64), (32, 64, 128)), (False, True)):
        model = nn.Sequential(*block(1, a, pool_first), *block(a, b, pool_first),
                              *block(b, c, pool_first), nn.Flatten(), nn.Linear(9 * c, 10))  # fmt: skip
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        opt = torch.optim.Adam(model.parameters())
        x = torch.rand(256, 1, 28, 28).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (256,))
        best = best_step_seconds(model, opt, x, y, steps=10, rounds=4)
        order = "conv-pool-BN-ReLU" if pool_first else "conv-BN-ReLU-pool"
        print(f"widths {a}-{b}-{c}  {order}  {1000 * best:6.1f} ms per step of 256", flush=True)


def step_seconds(batch: int, threads: int, fused: bool, steps: int = 30) -> float:
    """Best-of-five seconds per training step at ``batch`` of the ``fast`` recipe's net as it
    was when ``--allocator`` was measured (widths 8-16-32, a full-size first conv and pool)."""
    from mnistkit.models import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model("fast-cnn", stem="pool", stem_kernel=3)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.9, 0.99), fused=fused)
    x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    return best_step_seconds(model, opt, x, y, steps=steps, rounds=6, smoothing=0.1)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks for reuse instead of unmapping them (what
    jemalloc or tcmalloc do, which PyTorch's CPU tuning guide suggests): mmap threshold at its
    32 MB ceiling, trim threshold 1 GB. Measured with ``--allocator`` on the 2-core AVX2 CPU
    (best of three processes) it made a step of the ``fast`` net 1-4 % faster at batch 128 and
    1-7 % at batch 256, within the machine's noise, so mnistkit does not set it."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(
        libc.mallopt(m_trim_threshold, 1 << 30)
    )


def allocator_child(keep: bool, threads: int) -> None:
    """One process's figures for :func:`time_allocator` (mallopt cannot be undone in-process)."""
    if keep:
        keep_freed_memory()
    figures = {f"{b} {o}": step_seconds(b, threads, o == "fused")
               for b in (128, 256) for o in ("fused", "foreach")}  # fmt: skip
    print(json.dumps(figures))


def time_allocator(threads: int, rounds: int = 3) -> None:
    """Step time with glibc's default malloc against :func:`keep_freed_memory`,
    and AdamW's fused kernel against its multi-tensor one: fresh processes, alternating."""
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for _ in range(rounds):
        for keep in (False, True):
            out = subprocess.run([sys.executable, __file__, "--allocator-child", str(int(keep)),
                                  "--threads", str(threads)],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            runs[keep].append(json.loads(out.stdout.strip().splitlines()[-1]))
    for key in runs[False][0]:
        batch, opt = key.split()
        for keep in (False, True):
            ms = [1000 * r[key] for r in runs[keep]]
            print(f"batch {batch:>3}  AdamW {opt:7}  malloc {'kept' if keep else 'default':7}  "
                  f"{min(ms):5.1f} ms/step best, {statistics.median(ms):5.1f} median of "
                  f"{rounds} processes  ({60000 / int(batch) * min(ms) / 1000:.2f} s per epoch)",
                  flush=True)  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="fast")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--val-split", type=float, default=1 / 6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", action="store_true", help="only time bf16 vs float32 steps")
    ap.add_argument("--order", action="store_true", help="only time conv-BN block orders")
    ap.add_argument("--allocator", action="store_true",
                    help="only time steps with glibc malloc as is vs keep_freed_memory")  # fmt: skip
    ap.add_argument("--allocator-child", type=int, choices=(0, 1), help=argparse.SUPPRESS)
    ap.add_argument("--committee", action="store_true",
                    help="also the validation accuracy of each variant's seeds together "
                         "(the mean of their logits, as models.Members answers)")  # fmt: skip
    args = ap.parse_args()
    if args.allocator_child is not None:
        allocator_child(bool(args.allocator_child), args.threads)
        return 0
    if args.allocator:
        print("machine:", format_machine(machine_info()))
        time_allocator(args.threads)
        return 0
    if args.precision or args.order:
        print("machine:", format_machine(machine_info()))
        (time_precision if args.precision else time_order)(args.threads)
        return 0
    print("machine:", format_machine(machine_info()))
    val = validation_split(args.val_split) if args.committee else None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (changes, rec) in enumerate(variants(args.recipe, args.set)):
            accs, fits, cpus, logits = [], [], [], []
            for seed in range(args.seeds):
                c0 = time.process_time()
                run = train(rec, out=Path(tmp) / f"{i}-{seed}", seed=seed, device="cpu",
                            threads=args.threads, val_split=args.val_split, quiet=True)  # fmt: skip
                cpus.append(time.process_time() - c0)
                accs.append(run.metrics["val_accuracy"])
                fits.append(run.metrics["train_seconds"])
                if val is not None:
                    logits.append(predict_logits(run.model, val.x))
            mean = sum(accs) / len(accs)
            together = ""
            if val is not None:
                right = torch.stack(logits).mean(0).argmax(1) == val.y
                together = f"  committee of {len(logits)}: {100 * right.float().mean():.2f} %"
            print(f"{changes}  val {100 * mean:.2f} % (min {100 * min(accs):.2f})  "
                  f"fit {sum(fits) / len(fits):.1f} s  cpu {sum(cpus) / len(cpus):.1f} s"
                  f"{together}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
