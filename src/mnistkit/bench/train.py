"""Benchmarks that print figures: training speed and accuracy over seeds, inference speed.

Nothing here passes or fails on time; the figures are printed with the machine they were
measured on (CPU model, cores, threads, torch version, load average) and saved as JSON.

Time to target: while a recipe trains, a probe evaluates the model on the test split every
``probe_every`` steps until it first reaches the target accuracy. The probe runs in eval mode
under ``torch.no_grad`` and draws no random numbers, so training is the same with or without
it, and the engine leaves its time out of the fit seconds. The test split is used only to
*measure*, never to decide anything in training.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mnistkit import data
from mnistkit.fileio import write_json_atomic
from mnistkit.training.step import EVAL_BATCH, evaluate, steps_per_epoch, to_split

Log = Callable[[str], None]


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """Where a figure was measured: CPU, cores, torch threads, versions, load, GPU if used."""
    from mnistkit import __version__

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "mnistkit": __version__,
        "python": platform.python_version(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", ""),
        "load_average": [round(v, 2) for v in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "device": device,
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def format_machine(info: dict[str, Any]) -> str:
    load = info.get("load_average")
    text = (f"{info['cpu']}, {info['cores']} cores, {info['torch_threads']} torch threads, "
            f"torch {info['torch']}, device {info['device']}")  # fmt: skip
    if info.get("gpu"):
        text += f" ({info['gpu']})"
    if load:
        text += f", load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    return text


class TargetProbe:
    """Evaluates the model every ``every`` steps until its test accuracy first reaches
    ``target``; records the fit seconds and step at which it did.

    Called by :class:`mnistkit.training.loop.Trainer` as ``probe(get_model, step, fit_seconds)``; the
    model (a copy holding the EMA weights, for recipes with one) is asked for only on the
    steps it evaluates.
    """

    def __init__(self, split: Any, target: float, every: int, batch_size: int = EVAL_BATCH):
        self.split, self.target, self.every, self.batch_size = split, target, every, batch_size
        self.seconds: float | None = None
        self.step: int | None = None
        self.accuracy: float | None = None
        self.evaluations = 0

    def __call__(
        self, get_model: Callable[[], torch.nn.Module], step: int, fit_seconds: float
    ) -> None:
        if self.seconds is not None or step % self.every:
            return
        acc = evaluate(get_model(), self.split, self.batch_size)["accuracy"]
        self.evaluations += 1
        if acc >= self.target:
            self.seconds, self.step, self.accuracy = fit_seconds, step, acc


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def bench_train(
    recipe: str,
    *,
    seeds: int = 5,
    first_seed: int = 0,
    target: float = 0.99,
    probes_per_epoch: int = 10,
    device: str = "cpu",
    threads: int | None = None,
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    epochs: int | None = None,
    keep: str | os.PathLike[str] | None = None,
    log: Log = lambda m: None,
) -> dict[str, Any]:
    """Train ``recipe`` once per seed and collect accuracy and speed.

    Args:
        recipe: a recipe name.
        seeds: how many seeds, ``first_seed``, ``first_seed + 1``, ...
        target: the test accuracy whose first crossing is timed.
        probes_per_epoch: how often the target probe evaluates (its time is not counted).
        device, threads, dataset, data_dir, cache_dir, epochs: as :func:`mnistkit.train`.
        keep: a folder to keep each seed's run directory in (``KEEP/seedN``, model and
            history, for ``evaluate``, ``export`` and ``serve``); by default they are deleted.
        log: receives one line per finished seed.

    Returns:
        ``{"recipe", "machine", "target", "runs": [per seed], "summary": {mean/std}}``;
        a run's ``seconds_to_target`` is None when it never reached the target.
    """
    from mnistkit.recipes import get_recipe
    from mnistkit.training.runner import resolve_device, train

    rec = get_recipe(recipe)
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    loaded = data.load(dataset, data_dir=data_dir, cache_dir=cache_dir, log=lambda m: None)
    (xtr, _), (xte, yte) = loaded.arrays
    test = to_split(torch.from_numpy(xte.copy()).unsqueeze(1),
                    torch.from_numpy(yte.astype("int64")), dev)  # fmt: skip
    every = max(1, steps_per_epoch(len(xtr), rec.batch_size) // probes_per_epoch)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mnistkit-bench-") as tmp:
        for seed in range(first_seed, first_seed + seeds):
            probe = TargetProbe(test, target, every)
            out = Path(keep if keep is not None else tmp) / f"seed{seed}"
            run = train(recipe, out=out, seed=seed, device=device,
                        threads=threads, dataset=dataset, data_dir=data_dir,
                        cache_dir=cache_dir, epochs=epochs, quiet=True,
                        probe=probe, verifier=False)  # fmt: skip
            m = run.metrics
            row = {
                "seed": seed,
                "test_accuracy": m["test_accuracy"],
                "fit_seconds": m["train_seconds"],
                "examples_per_second": m["examples_per_second"],
                "seconds_to_target": probe.seconds,
                "steps_to_target": probe.step,
                "total_seconds": m["total_seconds"],
                "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            }
            runs.append(row)
            log(format_run(row, target))
    acc = _mean_std([r["test_accuracy"] for r in runs])
    fit = _mean_std([r["fit_seconds"] for r in runs])
    eps = _mean_std([r["examples_per_second"] for r in runs])
    hit = [r["seconds_to_target"] for r in runs if r["seconds_to_target"] is not None]
    to_target = _mean_std(hit)
    summary = {
        "test_accuracy_mean": acc[0], "test_accuracy_std": acc[1],
        "fit_seconds_mean": fit[0], "fit_seconds_std": fit[1],
        "examples_per_second_mean": eps[0], "examples_per_second_std": eps[1],
        "seconds_to_target_mean": to_target[0] if hit else None,
        "seconds_to_target_std": to_target[1] if hit else None,
        "reached_target": len(hit), "seeds": len(runs),
    }  # fmt: skip
    return {
        "recipe": recipe,
        "recipe_settings": rec.to_dict(),
        "dataset": dataset,
        "target": target,
        "probe_every_steps": every,
        "machine": machine_info(dev.type),
        "runs": runs,
        "summary": summary,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def format_run(row: dict[str, Any], target: float) -> str:
    to = row["seconds_to_target"]
    hit = f"{to:6.2f} s" if to is not None else "   never"
    return (f"seed {row['seed']:>3}  test {100 * row['test_accuracy']:6.2f} %  "
            f"fit {row['fit_seconds']:7.2f} s  {row['examples_per_second']:>9,.0f} ex/s  "
            f"to {100 * target:.1f} %: {hit}")  # fmt: skip


def format_train(result: dict[str, Any]) -> str:
    """The per-seed lines, the mean ± std line, and the machine."""
    s, target = result["summary"], result["target"]
    lines = [
        f"bench train: recipe {result['recipe']}, {s['seeds']} seeds, data {result['dataset']}"
    ]
    lines += [format_run(r, target) for r in result["runs"]]
    to = (f"{s['seconds_to_target_mean']:.2f} ± {s['seconds_to_target_std']:.2f} s"
          if s["seconds_to_target_mean"] is not None else "never")  # fmt: skip
    lines.append(
        f"mean ± std  test {100 * s['test_accuracy_mean']:.2f} ± {100 * s['test_accuracy_std']:.2f} %"
        f"  fit {s['fit_seconds_mean']:.2f} ± {s['fit_seconds_std']:.2f} s"
        f"  {s['examples_per_second_mean']:,.0f} ± {s['examples_per_second_std']:,.0f} ex/s"
        f"  to {100 * target:.1f} %: {to} ({s['reached_target']}/{s['seeds']} seeds reached it)"
    )
    lines.append("machine: " + format_machine(result["machine"]))
    return "\n".join(lines)


def save_json(path: str | os.PathLike[str], result: dict[str, Any]) -> None:
    write_json_atomic(path, result)
