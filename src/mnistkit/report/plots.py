"""The pictures: digit grids, training curves, confusion matrix, errors, calibration, comparison.

matplotlib is an optional extra (``mnistkit[report]``), imported inside functions so that
``import mnistkit`` never needs it. Every function takes plain arrays and writes one PNG
atomically; :mod:`mnistkit.report` puts them together.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mnistkit.errors import MnistkitError
from mnistkit.fileio import write_atomic
from mnistkit.metrics import Calibration

TRAIN_COLOR = "#1f77b4"  # blue
VAL_COLOR = "#ff7f0e"  # orange
GAP_COLOR = "#d62728"  # red: where the model does better on data it has seen
TEST_COLOR = "#2ca02c"  # green


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on servers and in CI
        import matplotlib.pyplot as plt
    except ImportError:
        raise MnistkitError("plots need matplotlib: pip install 'mnistkit[report]'") from None
    return plt


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG atomically, then close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _pyplot().close(fig)
    write_atomic(path, buf.getvalue())


def save_grid(
    images: np.ndarray,
    captions: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    caption_colors: Sequence[str] | None = None,
    columns: int | None = None,
) -> None:
    """A grid of grayscale digits, each with a caption under it, written as PNG.

    Digits are drawn as MNIST stores them (0 = background, 255 = ink) in ink-on-paper colors,
    with nearest-neighbour pixels so a person sees exactly the 28x28 values.

    Args:
        images: (N, H, W) uint8 or float in [0, 1].
        captions: one string per image.
        path: the PNG file to write.
        title: a line above the grid.
        caption_colors: one matplotlib color per caption (e.g. red for errors).
        columns: images per row (default: about square).
    """
    plt = _pyplot()
    n = len(images)
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols, 1.45 * rows + 0.4), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(images[k], cmap="gray_r", interpolation="nearest",
                  vmin=0, vmax=255 if images[k].dtype == np.uint8 else 1)  # fmt: skip
        color = caption_colors[k] if caption_colors else "black"
        ax.set_title(captions[k], fontsize=8, color=color, pad=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def _column(history: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """One history column as float64, missing or empty cells as NaN."""
    out = []
    for row in history:
        v = row.get(key)
        out.append(float(v) if v not in (None, "") else math.nan)
    return np.array(out, dtype=np.float64)


def _scaled(value: Any, scale: float) -> float | None:
    return None if value is None else float(value) * scale


def plot_curves(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    final: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> None:
    """Loss and accuracy per epoch, train beside validation, with the overfitting gap marked.

    The gap between train and validation curves is shaded red: the model does better on images
    it has seen than on images it has not, which is what the tutorials call overfitting. A
    dotted line marks the epoch of the lowest validation loss when validation loss rose after
    it. Just after the last epoch, the final train and test figures (``metrics.json``, the
    model in eval mode) are drawn with the gap between them as a red bar and its size.

    Args:
        history: rows of ``history.csv`` (epoch, train_loss, train_accuracy, val_loss,
            val_accuracy, ...); accuracies are fractions in [0, 1], empty cells mean no value.
        path: the PNG to write.
        final: ``metrics.json`` (train_loss, train_accuracy, test_loss, test_accuracy).
        title: a line above both panels.
    """
    plt = _pyplot()
    final = final or {}
    epochs = _column(history, "epoch")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.9))
    marker = "o" if len(epochs) <= 30 else None
    last = float(epochs[-1]) if len(epochs) else 1.0
    x_end = last + max(0.3, 0.04 * len(epochs))  # the final figures sit just right of the curves
    panels = ((ax_loss, "loss", "loss", 1.0), (ax_acc, "accuracy", "accuracy (%)", 100.0))
    for ax, key, label, scale in panels:
        fmt = ".4f" if key == "loss" else ".2f"
        train = _column(history, f"train_{key}") * scale
        val = _column(history, f"val_{key}") * scale
        ax.plot(epochs, train, color=TRAIN_COLOR, marker=marker, ms=4, label="train (during epoch)")  # fmt: skip
        has_val = bool(np.isfinite(val).any())
        if has_val:
            ax.plot(epochs, val, color=VAL_COLOR, marker=marker, ms=4, label="validation")
            # Shade where the model does better on training data than on held-out data.
            better = train < val if key == "loss" else train > val
            ax.fill_between(epochs, train, val, where=better & np.isfinite(val),
                            color=GAP_COLOR, alpha=0.15, interpolate=True,
                            label="gap (overfitting)")  # fmt: skip
        if has_val and key == "loss" and np.isfinite(val).sum() >= 2:
            best = int(np.nanargmin(val))
            if best < len(epochs) - 1:  # validation loss rose after this epoch: say so
                ax.axvline(epochs[best], color="gray", linestyle=":", linewidth=1.2)
                ax.annotate(f"lowest val loss\n(epoch {epochs[best]:g})",
                            xy=(epochs[best], np.nanmax(val)), fontsize=8, color="dimgray",
                            ha="left", va="top", xytext=(4, 0), textcoords="offset points")  # fmt: skip
        tr, te = (_scaled(final.get(f"{s}_{key}"), scale) for s in ("train", "test"))
        if tr is not None and te is not None:
            overfit = te > tr if key == "loss" else te < tr
            color = GAP_COLOR if overfit else "gray"
            ax.plot([x_end, x_end], [tr, te], color=color, linewidth=3, alpha=0.6,
                    solid_capstyle="butt")  # fmt: skip
            ax.annotate((f"gap {abs(te - tr):.2f} pts" if key == "accuracy" else f"gap {abs(te - tr):.3f}"),
                        xy=(x_end, (tr + te) / 2), xytext=(7, 0), textcoords="offset points",
                        va="center", fontsize=8, color=color)  # fmt: skip
        if tr is not None:
            ax.plot([x_end], [tr], marker="D", ms=6, mfc="white", mec=TRAIN_COLOR, mew=1.5,
                    linestyle="none", label=f"train, final {tr:{fmt}}")  # fmt: skip
        if te is not None:
            ax.plot([x_end], [te], marker="*", ms=13, color=TEST_COLOR, linestyle="none",
                    label=f"test, final {te:{fmt}}")  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(key.capitalize(), fontsize=11)
        ax.grid(alpha=0.3)
        if len(epochs) <= 10:
            ax.set_xticks(epochs)
        else:  # whole epochs only, few enough that their labels do not run together
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
        ax.set_xlim(min(epochs.min(initial=1.0), 1.0) - 0.3, x_end + max(0.9, 0.12 * len(epochs)))
        ax.legend(fontsize=8, frameon=False, loc="best")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


def plot_confusion(
    cm: np.ndarray,
    path: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    title: str | None = None,
) -> None:
    """The confusion matrix with its counts, colored by share of each true class (row).

    The diagonal (right answers, near 99 % of each row on MNIST) and the mistakes get separate
    color scales: on one scale every mistake would be the same white.
    """
    plt = _pyplot()
    from matplotlib.colors import Normalize
    from matplotlib.ticker import PercentFormatter

    cm = np.asarray(cm)
    k = len(cm)
    classes = list(classes) if classes is not None else [str(i) for i in range(k)]
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    diag = np.eye(k, dtype=bool)
    off_max = float(share[~diag].max()) if k > 1 and share[~diag].max() > 0 else 1.0
    side = max(5.0, 0.55 * k + 1.5)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    ax.imshow(np.ma.masked_where(~diag, share), cmap="Blues", norm=Normalize(0, 1))
    errs = ax.imshow(np.ma.masked_where(diag, share), cmap="Reds", norm=Normalize(0, off_max))
    for i in range(k):
        for j in range(k):
            if cm[i, j] == 0 and i != j:
                continue
            dark = share[i, j] > 0.6 if i == j else share[i, j] > 0.6 * off_max
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8 if k <= 10 else 6,
                    color="white" if dark else "black")  # fmt: skip
    bar = fig.colorbar(errs, ax=ax, fraction=0.046, pad=0.04)
    bar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    bar.set_label("mistakes: share of the true class's images")
    ax.set_xticks(range(k), classes, rotation=45 if max(map(len, classes)) > 2 else 0, ha="right" if max(map(len, classes)) > 2 else "center")  # fmt: skip
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total, right = int(cm.sum()), int(np.trace(cm))
    ax.set_title(title or f"Confusion matrix: {right} of {total} right, {total - right} wrong",
                 fontsize=11)  # fmt: skip
    fig.tight_layout()
    save_figure(fig, path)


def plot_errors(
    images: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    path: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    limit: int = 48,
    columns: int = 8,
) -> int:
    """The misclassified images, the most confidently wrong first; returns how many are shown.

    Each caption reads ``true → predicted`` and the probability the model gave its answer.
    """
    labels = np.asarray(labels).astype(np.int64)
    pred = probabilities.argmax(axis=1)
    p_pred = probabilities.max(axis=1)
    wrong = np.flatnonzero(pred != labels)
    order = wrong[np.argsort(-p_pred[wrong], kind="stable")][:limit]
    names = list(classes) if classes is not None else [str(i) for i in range(probabilities.shape[1])]  # fmt: skip
    captions = [f"{names[labels[i]]} → {names[pred[i]]}\np={p_pred[i]:.2f}  #{i}" for i in order]
    title = (f"{len(wrong)} misclassified test images, the most confident first "
             f"(true → predicted, p of the prediction, #index)")  # fmt: skip
    if not len(order):
        title = "no misclassified test images"
    images_shown = images[order] if len(order) else np.zeros((1, 28, 28), dtype=np.uint8)
    save_grid(images_shown, captions or ["none"], path, title=title,
              caption_colors=["#b00020"] * len(captions) or None, columns=columns)  # fmt: skip
    return len(order)


def plot_calibration(
    cal: Calibration,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    before: Calibration | None = None,
    temperature: float | None = None,
) -> None:
    """A reliability diagram: accuracy per confidence bin against the diagonal, with the ECE.

    Below it, how many predictions fall in each bin (log scale: on MNIST nearly all are sure).
    With ``before`` (the model's own probabilities, ``T = 1``), two diagrams side by side:
    before and after dividing the logits by ``temperature`` (``calibration``).
    """
    plt = _pyplot()
    panels = [(cal, title or "Reliability: is the model as sure as it is right?")]
    if before is not None:
        t = f"T = {temperature:.3g}" if temperature is not None else "T"
        panels = [(before, "before: the model's own (T = 1)"), (cal, f"after: logits / {t}")]
    fig, axes = plt.subplots(2, len(panels), figsize=(5.6 * len(panels), 6.2), sharex=True,
                             squeeze=False, gridspec_kw={"height_ratios": [3, 1]})  # fmt: skip
    for col, (c, heading) in enumerate(panels):
        _reliability(axes[0, col], axes[1, col], c, heading)
    if before is not None:
        fig.suptitle(title or "Reliability: is the model as sure as it is right?", fontsize=12)
    fig.tight_layout()
    save_figure(fig, path)


def _reliability(ax: Any, ax_n: Any, cal: Calibration, title: str) -> None:
    centers = (cal.edges[:-1] + cal.edges[1:]) / 2
    width = float(cal.edges[1] - cal.edges[0])
    filled = cal.counts > 0
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1, label="perfectly calibrated")  # fmt: skip
    ax.bar(centers[filled], cal.accuracy[filled], width=width, color=TRAIN_COLOR, alpha=0.85,
           edgecolor="white", label="accuracy in bin")  # fmt: skip
    # The gap from each bar to the bin's mean confidence: red above the bar where the model
    # was surer than it was right (overconfident), gold inside it where it was less sure.
    # Hatched without fill, so the blue bar under a gold gap keeps its color.
    acc, conf = cal.accuracy[filled], cal.confidence[filled]
    for over, color, label in ((True, GAP_COLOR, "overconfident"), (False, "#e6a700", "underconfident")):  # fmt: skip
        sel = (conf > acc) if over else (conf < acc)
        if sel.any():
            ax.bar(centers[filled][sel], (conf - acc)[sel], bottom=acc[sel], width=width,
                   facecolor="none", edgecolor=color, hatch="///", linewidth=1.2, label=label)  # fmt: skip
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.text(0.97, 0.04, f"ECE = {100 * cal.ece:.2f} %", transform=ax.transAxes, ha="right",
            va="bottom", fontsize=11, bbox={"boxstyle": "round", "fc": "white", "ec": "0.7"})  # fmt: skip
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax_n.bar(centers[filled], cal.counts[filled], width=width, color="0.55", edgecolor="white")
    ax_n.set_yscale("log")
    ax_n.set_ylabel("predictions")
    ax_n.set_xlabel("confidence (top probability)")
    ax_n.set_xlim(0, 1)
    ax_n.grid(alpha=0.3)


def plot_compare(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """Runs side by side: test accuracy against training time, marker area ~ parameters.

    Args:
        rows: one mapping per run with ``name``, ``test_accuracy`` (fraction), ``seconds``
            and ``parameters`` (either may be None).
        path: the PNG to write.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    params = [r.get("parameters") or 0 for r in rows]
    biggest = max(params) or 1
    for r, n in zip(rows, params, strict=True):
        x = r.get("seconds") or 0.0
        y = 100 * float(r.get("test_accuracy") or 0.0)
        size = max(40.0, 1200.0 * n / biggest)  # marker area in pt^2, proportional to parameters
        ax.scatter([x], [y], s=size, alpha=0.55, edgecolor="black", linewidth=0.6)
        label = r["name"] + (f"\n{n / 1e6:.2f} M params" if n else "")
        ax.annotate(label, (x, y), xytext=(math.sqrt(size) / 2 + 5, 0), textcoords="offset points",
                    va="center", fontsize=8)  # fmt: skip
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("test accuracy (%)")
    xs = [r.get("seconds") or 0.0 for r in rows]
    if min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.margins(x=0.25, y=0.25)
    ax.grid(alpha=0.3)
    ax.set_title("Test accuracy against training time (marker area ~ parameters)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
