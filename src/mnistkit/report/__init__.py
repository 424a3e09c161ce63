"""A run's report: the pictures of :mod:`mnistkit.report.plots` and one self-contained ``report.html``.

:func:`write_report` is what ``mnistkit evaluate RUN_DIR --report`` calls; :func:`compare_rows`
is behind ``mnistkit compare``. matplotlib is imported inside functions (``mnistkit[report]``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnistkit import rundir
from mnistkit.calibration import rescale, temperature_of
from mnistkit.errors import MnistkitError
from mnistkit.metrics import calibration, class_scores, confusion_matrix
from mnistkit.report import plots

# Re-exported: `data show` and others draw digit grids through these.
from mnistkit.report.plots import _pyplot, save_figure, save_grid  # noqa: F401
from mnistkit.rundir import RunDir

__all__ = ["RunFiles", "compare_rows", "predict_probabilities", "read_run", "save_figure",
           "save_grid", "write_report"]  # fmt: skip

REPORT_FILES = ("curves.png", "confusion.png", "errors.png", "calibration.png", "report.html")


@dataclass(frozen=True)
class RunFiles:
    """What a run directory holds, read without torch."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, str]]  # rows of history.csv, cells as written (empty: no value)

    @property
    def name(self) -> str:
        return str(self.metrics.get("recipe") or self.config.get("recipe") or self.path.name)

    @property
    def dataset(self) -> str:
        ds = self.metrics.get("dataset") or self.config.get("dataset") or "mnist"
        return str(ds.get("name", "mnist") if isinstance(ds, dict) else ds)


def read_run(run_dir: str | os.PathLike[str]) -> RunFiles:
    """Read a finished run's ``config.json``, ``metrics.json`` and ``history.csv``.

    The config is read as written (not validated) so that a report still shows a run whose
    config a later mnistkit would refuse; the metrics must be there (a finished run)."""
    run = RunDir(run_dir)
    if not run.is_finished():
        raise MnistkitError(f"{run.path} is not a run directory (no {rundir.METRICS}); train one "
                            f"with `mnistkit train --recipe NAME --out {run.path}`.")  # fmt: skip
    config = rundir.read_json(run / rundir.CONFIG, "config") if run.is_run() else {}
    return RunFiles(run.path, config, run.metrics(), run.history())


def predict_probabilities(
    run_dir: str | os.PathLike[str], images: np.ndarray, *, device: str = "cpu", batch_size: int = 1000
) -> np.ndarray:  # fmt: skip
    """Calibrated probabilities (N, 10) float64 of the run's model for uint8 (N, 28, 28) images:
    ``softmax(logits / T)`` with the run's temperature (``calibration``).

    ``device`` is ``"auto"``, ``"cpu"`` or ``"cuda"``; batches of ``batch_size`` keep memory flat.
    """
    import torch

    from mnistkit.rundir import load_model
    from mnistkit.training.runner import resolve_device

    dev = resolve_device(device)  # "auto", "cpu" or "cuda"
    model, config = load_model(Path(run_dir), device=dev)
    t = temperature_of(config)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.array(images[i : i + batch_size]))  # a writable copy
            x = batch.to(device=dev, dtype=torch.float32)
            if images.dtype == np.uint8:
                x = x / 255.0
            logits = model(x.reshape(-1, 1, 28, 28))  # (B, 10)
            out.append(torch.softmax(logits.double() / t, dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 10))


def write_report(
    run_dir: str | os.PathLike[str],
    *,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Write ``curves.png``, ``confusion.png``, ``errors.png``, ``calibration.png`` and a
    self-contained ``report.html`` for a run.

    Args:
        run_dir: the run directory (``metrics.json``, ``config.json``, ``history.csv``).
        x_test, y_test: the test split (uint8 (N, 28, 28), (N,)); default: the run's data set,
            loaded and verified through :func:`mnistkit.data.load`.
        probabilities: (N, K) calibrated probabilities on ``x_test``, as the run reports them;
            default: computed with the run's model (:func:`predict_probabilities`), which
            needs torch. The model's own (before calibration) are derived from them with the
            run's temperature.
        out_dir: where the files go (default ``run_dir``).
        device: for computing probabilities: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        data_dir, cache_dir: passed to :func:`mnistkit.data.load` when loading the test split.
        log: progress lines (default: silent).

    Returns:
        ``{"curves": path, "confusion": ..., "errors": ..., "calibration": ..., "html": ...}``.
    """
    from mnistkit import data
    from mnistkit.report.html import render_html

    say = log or (lambda m: None)
    run = read_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.path
    classes = list(data.get_dataset(run.dataset).classes) if run.dataset in data.DATASETS else None
    if x_test is None or y_test is None:
        say(f"loading the {run.dataset} test split")
        loaded = data.load(run.dataset, data_dir=data_dir, cache_dir=cache_dir, log=say)
        (_, _), (x_test, y_test) = loaded.arrays
    if probabilities is None:
        say(f"predicting {len(x_test)} test images with {run.path}")
        probabilities = predict_probabilities(run.path, x_test, device=device)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(y_test).astype(np.int64)
    if probabilities.ndim != 2 or len(probabilities) != len(labels) or len(x_test) != len(labels):
        raise MnistkitError(f"{len(x_test)} images, {len(labels)} labels and probabilities of "
                            f"shape {probabilities.shape} do not match.")  # fmt: skip
    k = probabilities.shape[1]
    classes = classes if classes and len(classes) == k else [str(i) for i in range(k)]

    cm = confusion_matrix(labels, probabilities.argmax(axis=1), n_classes=k)
    scores = class_scores(cm)
    cal = calibration(probabilities, labels)
    t = temperature_of(run.config)
    before = calibration(rescale(probabilities, t), labels) if t != 1.0 else None
    m = run.metrics
    paths = {key: out / f"{key}.png" for key in ("curves", "confusion", "errors", "calibration")}
    say(f"writing the report into {out}")
    plots.plot_curves(run.history, paths["curves"], final=m, title=f"{run.name}: training curves")
    plots.plot_confusion(cm, paths["confusion"], classes=classes)
    shown = plots.plot_errors(x_test, labels, probabilities, paths["errors"], classes=classes)
    plots.plot_calibration(cal, paths["calibration"], before=before, temperature=t)
    paths["html"] = out / "report.html"
    render_html(run, paths, cm=cm, scores=scores, cal=cal, classes=classes, errors_shown=shown,
                before=before)  # fmt: skip
    return paths


def compare_rows(run_dirs: list[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """One row per run: name, test/train accuracy and loss, epochs, seconds, parameters."""
    rows = []
    for d in run_dirs:
        run = read_run(d)
        m = run.metrics
        params = m.get("parameters") or run.config.get("parameters") or rundir.count_parameters(d)
        rows.append({
            "run": str(run.path),
            "name": run.name,
            "test_accuracy": m.get("test_accuracy"),
            "test_loss": m.get("test_loss"),
            "train_accuracy": m.get("train_accuracy"),
            "epochs": m.get("epochs"),
            "seconds": m.get("train_seconds", m.get("total_seconds")),
            "parameters": params,
        })  # fmt: skip
    return rows
