"""Photographed numbers made of MNIST digits: a postcode, a meter reading, a score.

Each number is 2-6 MNIST digits written in a row by one writer (one pen, one height with a
jitter of a few percent per digit), at natural spacing: gaps between the digits' boxes from
slightly overlapping (touching strokes) to wide, on a sloping and slightly curved baseline,
each digit a little off the line. The row is then photographed as :mod:`digit_photos` does a
single digit: specks, tinted paper or a board, uneven light, a strip of table, blur, noise,
grey or colour, JPEG or PNG. Number ``i`` of seed ``s`` depends on nothing else (its own
generator), so any slice is reproducible; its digits are drawn from the split given.

``alone=True`` also photographs each digit alone, in its place in the same photo (the same
paper, light, specks, blur, noise and JPEG): what a segmenter that loses nothing would hand
the classifier, the ceiling of reading the number.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from digit_photos import ink_cover, pen_style, photograph

# Spacing, fractions of the digit height: the gap between neighbouring digits' boxes is drawn
# uniformly from GAP; below 0 the boxes overlap and the strokes often touch.
GAP = (-0.12, 0.55)
SLOPE = 0.12  # baseline slope up to this (rise over run: about 7 degrees)
BOW = 0.08  # baseline curvature: its middle up to this x height off the straight line
JITTER = 0.05  # each digit's height and its place off the baseline: sigma, x height


@dataclass
class NumberSample:
    """One photographed number: encoded bytes, its digits as a string, their MNIST indices."""

    data: bytes
    number: str
    indices: list[int]
    params: dict[str, Any]
    alone: list[bytes] = field(default_factory=list)  # each digit alone in the photo


Placed = list[tuple[int, int, np.ndarray]]  # each digit's (top, left, coverage) on the page


def compose(
    digits: list[np.ndarray], rng: np.random.Generator, height: int, radius: int, thr: float
) -> tuple[np.ndarray, tuple[int, int, int, int], list[float], np.ndarray, Placed]:
    """The digits' ink in a row on a page: (coverage, the row's box, the gaps drawn, which
    digit (k + 1, 0 for paper) holds most of the ink at each pixel, and where each went)."""
    covers = []
    for d in digits:
        h = max(8, round(height * float(np.clip(1 + rng.normal(0, JITTER), 0.85, 1.15))))
        covers.append(ink_cover(d, radius, thr, h))
    gaps = [float(rng.uniform(*GAP)) for _ in digits[1:]]
    slope = float(rng.uniform(-SLOPE, SLOPE))
    bow = float(rng.uniform(-BOW, BOW))
    xs = [0]
    for c, g in zip(covers[:-1], gaps, strict=True):
        xs.append(xs[-1] + c.shape[1] + round(g * height))
    width = max(x + c.shape[1] for x, c in zip(xs, covers, strict=True))
    # Baseline: bottom of each digit, y = slope * x + a parabola through the row's ends.
    bottoms = []
    for x, c in zip(xs, covers, strict=True):
        u = (x + c.shape[1] / 2) / max(1, width)
        y = slope * (x + c.shape[1] / 2) + bow * height * 4 * u * (1 - u)
        bottoms.append(y + rng.normal(0, JITTER) * height)
    tops = [b - c.shape[0] for b, c in zip(bottoms, covers, strict=True)]
    top = min(tops)
    row_h = int(np.ceil(max(bottoms) - top))
    margin_x = [int(height * rng.uniform(0.3, 1.5)) for _ in range(2)]
    margin_y = [int(height * rng.uniform(0.3, 1.2)) for _ in range(2)]
    page = np.zeros((row_h + sum(margin_y) + 1, width + sum(margin_x) + 1), np.float32)
    owner = np.zeros(page.shape, np.uint8)
    placed = []
    for k, (x, t, c) in enumerate(zip(xs, tops, covers, strict=True)):
        y0, x0 = margin_y[0] + int(round(t - top)), margin_x[0] + x
        region = page[y0 : y0 + c.shape[0], x0 : x0 + c.shape[1]]
        c = c[: region.shape[0], : region.shape[1]]
        owner[y0 : y0 + c.shape[0], x0 : x0 + c.shape[1]][c > np.maximum(region, 0.1)] = k + 1
        np.maximum(region, c, out=region)
        placed.append((y0, x0, c))
    box = (margin_x[0], margin_y[0], margin_x[0] + width, margin_y[0] + row_h)
    return page, box, gaps, owner, placed


def render_number(
    digits: list[np.ndarray], rng: np.random.Generator, alone: bool = False
) -> tuple[bytes, dict[str, Any], list[bytes]]:
    """One number written and photographed (see the module's docstring), and with ``alone``
    each digit photographed alone in its place."""
    pen, radius, thr = pen_style(rng)
    # The sizes of the single-digit photos (digit_photos.render): a scan to a close-up.
    height = int(np.exp(rng.uniform(np.log(24), np.log(320))))
    page, box, gaps, owner, placed = compose(digits, rng, height, radius, thr)
    state = copy.deepcopy(rng)  # the photo's draws, replayed for each digit alone
    data, params = photograph(page, box, height, rng)
    photos = []
    if alone:
        for y0, x0, c in placed:
            own = np.zeros_like(page)
            own[y0 : y0 + c.shape[0], x0 : x0 + c.shape[1]] = c
            photos.append(photograph(own, box, height, copy.deepcopy(state))[0])
    return data, {"pen": pen, "height": height, "gaps": [round(g, 3) for g in gaps], **params,
                  "owner": owner}, photos  # fmt: skip


def make_numbers(
    images: np.ndarray, labels: np.ndarray, n: int, seed: int = 0, start: int = 0,
    lengths: tuple[int, int] = (2, 6), alone: bool = False,
) -> list[NumberSample]:  # fmt: skip
    """Numbers ``start .. start + n - 1``: each of 2-6 digits drawn (with its own generator,
    ``default_rng([seed, i])``) from ``images``, a split of MNIST; ``alone``: each digit also
    photographed alone (:attr:`NumberSample.alone`)."""
    out = []
    for i in range(start, start + n):
        rng = np.random.default_rng([seed, i])
        k = int(rng.integers(lengths[0], lengths[1] + 1))
        idx = [int(j) for j in rng.integers(0, len(images), k)]
        data, params, photos = render_number([images[j] for j in idx], rng, alone)
        number = "".join(str(int(labels[j])) for j in idx)
        out.append(NumberSample(data, number, idx, params, photos))
    return out
