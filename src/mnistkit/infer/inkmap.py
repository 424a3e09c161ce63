"""The ink of a page: steps 1-3 of :mod:`mnistkit.infer.preprocess`, shared by one digit and a
number (:mod:`mnistkit.infer.segment`).

From decoded pixels to an :class:`InkMap`: the image shrunk to a work size, the paper under the
ink (:mod:`mnistkit.infer.paper`), the ink signal along the ink's colour, and the mask of ink
pieces (a threshold between paper and ink, pieces joined by hysteresis, paper edges, ruled lines
and printed box edges dropped), with the factors that take work pixels back to the source's.
Which pieces make a digit is the caller's choice: ``select_digit`` for one, the segmentation
for a number.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from mnistkit.infer.paper import (
    MIN_CONTRAST,
    Paper,
    estimate_paper,
    ink_direction,
    ink_signal,
    projected_surface,
)
from mnistkit.infer.pieces import Pieces, drop_lines, edge_bands

# Detection runs on the image shrunk by the whole factor that brings it nearest WORK px (a
# 1000 px image at 500 px, in a quarter of the time).
WORK = 512
FLAT_WORK = 128  # px: a flat canvas at least twice this is searched at half size


@dataclass
class InkMap:
    """A page's ink at work scale, and how to get back to the source.

    Attributes:
        src: the decoded pixels, (H, W) or (H, W, C), uint8 or float32 in [0, 1].
        paper, direction, surface: the paper, the ink's colour (None for grey) and the paper
            along it at work size (or one value): enough to measure ink on ``src`` itself.
        ink: (h, w) float32 ink signal at work scale, ink positive.
        mask: (h, w) bool, the ink pieces (edges and lines dropped).
        smooth: the signal the pieces are weighed by (``ink`` smoothed on a photo).
        level: the ink's typical level (ink minus paper, fraction of full scale).
        f: work px per decoded px (1, 1/2, 1/3...).
        scale: source px per decoded px (a JPEG decoded at a reduced scale: 4 for 4000 -> 1000).
    """

    src: np.ndarray
    paper: Paper
    direction: np.ndarray | None
    surface: np.ndarray | float
    ink: np.ndarray
    mask: np.ndarray
    smooth: np.ndarray
    level: float
    f: float
    scale: float = 1.0

    @functools.cached_property
    def pieces(self) -> Pieces:
        """The mask's connected pieces, weighed by ``smooth``: found once per page, though the
        digit's choice, the one-digit test and the segmentation each ask (a drawing page's
        canvas was labelled twice per request: 600 calls in 300 reads, py-spy)."""
        return Pieces.of(self.mask, self.smooth)

    @property
    def fy(self) -> float:
        """Decoded px per work px, vertically."""
        return self.src.shape[0] / self.ink.shape[0]

    @property
    def fx(self) -> float:
        return self.src.shape[1] / self.ink.shape[1]

    def source_box(self, xs: np.ndarray, ys: np.ndarray) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of work-scale pixels, in the source image's pixels."""
        kx, ky = self.fx * self.scale, self.fy * self.scale
        return (int(xs.min() * kx), int(ys.min() * ky),
                int(np.ceil((xs.max() + 1) * kx)), int(np.ceil((ys.max() + 1) * ky)))  # fmt: skip


def channels(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 1) -> (H, W): OpenCV keeps a single channel as 2-D."""
    return pixels[..., 0] if pixels.shape[2] == 1 else pixels


def unit(a: np.ndarray) -> np.ndarray:
    """Pixels as float32 in [0, 1] (uint8 / 255)."""
    return a.astype(np.float32) * np.float32(1 / 255) if a.dtype == np.uint8 else a


def ink_map(pixels: np.ndarray, scale: float = 1.0) -> InkMap | None:
    """The ink of decoded pixels ((H, W, C) uint8, or float32 in [0, 1]); None for a blank
    page. ``scale``: source px per decoded px."""
    h, w, _ = pixels.shape
    src = channels(pixels)
    # Shrunk by a whole factor: OpenCV's area average is several times faster then (a 1000 px
    # photo: 2 ms, not 5).
    f = 1.0 / max(1, round(max(h, w) / WORK))
    size = (max(1, w // round(1 / f)), max(1, h // round(1 / f)))
    work = unit(src if f == 1 else cv2.resize(src, size, interpolation=cv2.INTER_AREA))
    paper = estimate_paper(work)
    if paper.grid is None and f == 1 and min(h, w) >= 2 * FLAT_WORK:
        # A flat canvas (the drawing page's, 280 px high, brush 20 px) has no noise or
        # shadow to look through: its strokes are found at half size, and a digit under BOX
        # px there is cut from the decoded pixels, as from a photo. The page's canvas: x0.77
        # of the CPU time (A/B in one process, EPYC); 1,000 canvases of each size read alike.
        work = cv2.resize(work, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        f = 0.5
    direction = None
    if work.ndim == 3:
        # The ink's colour, from the grid (or a sample of a flat canvas).
        if paper.grid is not None:
            sample = paper.sign * (paper.grid - paper.surface)
        else:
            step = max(1, int(np.sqrt(work.shape[0] * work.shape[1] / 16384)))
            sample = paper.sign * (work[::step, ::step] - paper.surface)
        sample = sample.reshape(-1, work.shape[2])
        norm = np.sqrt((sample * sample).sum(axis=1))
        direction = ink_direction(sample, norm > max(MIN_CONTRAST / 2, 0.5 * float(norm.max())))
        if direction is None:
            return None
    surface = projected_surface(paper, direction, (work.shape[1], work.shape[0]))
    signed = ink_signal(work, paper, direction, surface, signed=True)
    ink = np.maximum(signed, 0.0)
    found = ink_mask(ink, signed, flat=paper.grid is None)
    if found is None:
        return None
    mask, smooth, level = found
    return InkMap(src, paper, direction, surface, ink, mask, smooth, level, f, scale)


def ink_mask(
    ink: np.ndarray, signed: np.ndarray, flat: bool = False
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The ink pieces on the work image, the signal they are weighed by and the ink's level, or
    None for an empty page.

    The split between paper and ink is Otsu's on the smoothed ink signal: it holds when the ink
    is a small minority of the frame and when it is most of it (a tight crop, a digit drawn
    across the whole canvas), where a threshold from the paper's spread alone rose above the
    ink itself. It is kept above the noise, measured on differences of neighbouring pixels (a
    measure that does not depend on how much of the frame is ink).

    ``flat``: the paper is one flat colour (a drawing app's canvas). Without noise there is no
    smoothing, no hysteresis, and no paper edge or ruled line to look for: the fast path for
    the drawing page (a 280 px canvas in about a millisecond).
    """
    # Noise of the smoothed signal: a 3x3 mean divides white noise's sigma by 3.
    # On the signal before negatives are cut: cut, the paper's noise is half zeros, and its
    # spread came out half as large (the noise of small photos then passed as ink).
    rows = signed[:: max(1, ink.shape[0] // 128)]
    d = np.abs(np.diff(rows, axis=1)).ravel() if ink.shape[1] > 1 else np.zeros(1)
    # The median is 0 exactly when over half the differences are 0: on a flat canvas a count
    # (0.01 ms) tells it before a sort (0.2 ms on the drawing page's canvas).
    zero = flat and 2 * np.count_nonzero(d) < d.size
    sigma = 0.0 if zero else 1.4826 * float(np.median(d)) / np.sqrt(2) / 3
    if flat and sigma == 0:
        top = float(ink.max())
        if top < MIN_CONTRAST:
            return None
        return ink > 0.3 * top, ink, top
    smooth = cv2.blur(ink, (3, 3)) if min(ink.shape) >= 9 else ink
    top = float(smooth.max())
    if top < MIN_CONTRAST:
        return None
    q = np.round(smooth * (255 / top)).astype(np.uint8)
    otsu, _ = cv2.threshold(q, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    split = max(otsu * top / 255, 6 * sigma, MIN_CONTRAST / 2)
    above = smooth[smooth > split]
    if above.size == 0:
        return None
    level = float(np.median(above))
    if level < MIN_CONTRAST or level < 8 * sigma:
        return None
    # Hysteresis (Canny's): pixels above a low threshold count when they connect to some above
    # a high one, so a faint or thin stroke stays in one piece and faint noise stays out.
    low = smooth > max(0.3 * level, 4 * sigma)
    high = smooth > max(0.5 * level, 6 * sigma)
    n, labels = cv2.connectedComponents(low.astype(np.uint8), connectivity=8)
    hit = np.zeros(n, bool)
    hit[labels[high]] = True
    hit[0] = False
    mask = hit[labels]
    # Paper edges (a strip of table in a photo) and rules, grids and box edges out.
    mask &= ~edge_bands(mask)
    mask = drop_lines(mask, smooth > max(0.15 * level, 4 * sigma))
    if not mask.any():
        return None
    return mask, smooth, level
