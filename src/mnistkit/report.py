"""Pictures of digits and of runs. matplotlib is an optional extra, imported inside functions."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import MnistkitError
from .fileio import write_atomic


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
