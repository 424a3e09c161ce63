"""A written number -> its digits, left to right, read by the model that recognizes them.

The classical way (over-segmentation and recognition, as in the reading of NIST's zip codes):

1. primitives: the ink pieces of :class:`~mnistkit.infer.inkmap.InkMap` (paper edges and
   ruled lines already out), in left-to-right order (a sloping line keeps its order), with a
   piece too wide for one digit cut at candidate columns: minima of its ink per column (where
   two touching digits meet the stroke between them is thin);
2. candidates: runs of up to ``MAX_GROUP`` neighbouring primitives (a 5's detached bar, a 4
   broken in two, a dash of a faint stroke: each joins its digit in some run), each cut from
   the page and brought to MNIST's form on its own (:func:`~mnistkit.infer.preprocess.cut_digit`),
   all read by the model in one batch;
3. the most probable sequence by dynamic programming over the candidates' log-probabilities,
   with small costs (:class:`Costs`) for a cut through a piece, a candidate much shorter or
   wider than the line's digits, and a small piece left out (a speck).

Costs were tuned on numbers made from MNIST *training* digits (``benchmarks/read_numbers.py
--tune``); the report set is made from test digits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mnistkit.infer.inkmap import InkMap
from mnistkit.infer.pieces import Pieces
from mnistkit.infer.preprocess import Preprocessed, cut_digit

Probabilities = Callable[[np.ndarray], np.ndarray]  # (N, 28, 28) -> (N, 10)

MAX_GROUP = 4  # primitives in one digit: a digit broken in four dashes at most
# A line with more primitives than this is not read (a page of text, a texture): 40 digits
# each cut in up to three. Reading is linear in primitives; this bounds its time and memory.
MAX_PRIMITIVES = 120


@dataclass(frozen=True)
class Costs:
    """Segmentation costs in nats (log-probability units), and the geometry behind them.

    Line height ``H``: the median height of the pieces with at least a third of the largest
    one's ink. Lengths below are fractions of ``H``.
    """

    cut: float = 1.0  # per cut through a piece (touching digits pulled apart)
    skip: float = 0.3  # per small piece left out of every digit (a speck)
    drop: float = 8.0  # per other piece left out (one the model cannot read in any digit)
    short: float = 4.0  # per H a digit is shorter than ``short_at``
    short_at: float = 0.55
    wide: float = 4.0  # per H a digit is wider than ``wide_at``
    wide_at: float = 1.1
    small: float = 0.35  # a piece no longer than this is small: left out or joined, never alone
    gap: float = 0.35  # pieces further apart than this are never one digit
    cut_from: float = 0.55  # pieces wider than this are offered cuts
    cut_margin: float = 0.12  # no cut closer than this to a piece's end or to another cut


@dataclass
class Primitive:
    """A piece, or the columns ``[c0, c1)`` of one (work scale), in reading order."""

    piece: int  # label in Pieces.labels (k + 1)
    x0: int
    x1: int
    y0: int
    y1: int
    small: bool
    cut_left: bool = False  # its left edge is a cut through a piece


@dataclass
class Digit:
    """One digit read: its preprocessed 28x28 and the model's probabilities."""

    item: Preprocessed
    probs: np.ndarray  # (10,) calibrated


def line_height(p: Pieces, keep: np.ndarray) -> float:
    """The height of the line's digits, work px (see :class:`Costs`)."""
    idx = np.nonzero(keep)[0]
    big = idx[p.mass[idx] >= p.mass[idx].max() / 3]
    return float(np.median(p.y1[big] - p.y0[big]))


def primitives(m: InkMap, p: Pieces, keep: np.ndarray, height: float, costs: Costs) -> list[Primitive]:
    """The pieces in ``keep``, wide ones cut at the minima of their ink per column, in order."""
    out = []
    for k in np.nonzero(keep)[0]:
        x0, x1, y0, y1 = int(p.x0[k]), int(p.x1[k]), int(p.y0[k]), int(p.y1[k])
        small = max(x1 - x0, y1 - y0) <= costs.small * height
        cuts = []
        if x1 - x0 > costs.cut_from * height:
            cuts = cut_columns(p.labels[y0:y1, x0:x1] == k + 1, height, costs)
        edges = [x0, *(x0 + c for c in cuts), x1]
        for i in range(len(edges) - 1):
            a, b = edges[i], edges[i + 1]
            sub = p.labels[y0:y1, a:b] == k + 1
            rows = np.nonzero(sub.any(axis=1))[0]
            if len(rows) == 0:
                continue
            out.append(Primitive(k + 1, a, b, y0 + int(rows[0]), y0 + int(rows[-1]) + 1,
                                 small and not cuts, cut_left=i > 0))  # fmt: skip
    out.sort(key=lambda q: q.x0 + q.x1)
    return out


def cut_columns(piece: np.ndarray, height: float, costs: Costs) -> list[int]:
    """Columns to offer as cuts in one piece: local minima of its ink per column (smoothed
    over 3 columns), lowest first, ``cut_margin`` apart and from the ends; as many as the
    piece could hold digits of a third of the line's height."""
    prof = piece.sum(axis=0).astype(np.float32)
    w = len(prof)
    if w >= 3:
        prof = np.convolve(prof, np.ones(3, np.float32) / 3, mode="same")
    margin = max(1, int(round(costs.cut_margin * height)))
    inner = np.arange(margin, w - margin)
    if len(inner) == 0:
        return []
    left = np.r_[np.inf, prof[:-1]]
    right = np.r_[prof[1:], np.inf]
    minima = [int(c) for c in inner if prof[c] <= left[c] and prof[c] <= right[c]]
    minima.sort(key=lambda c: prof[c])
    chosen: list[int] = []
    for c in minima:
        if all(abs(c - d) >= margin for d in chosen):
            chosen.append(c)
        if len(chosen) >= max(1, int(w / (height / 3))):
            break
    return sorted(chosen)


def segment(
    m: InkMap, probabilities: Probabilities, costs: Costs | None = None
) -> list[Digit] | None:
    """The digits of ``m``'s ink, left to right ([] for none), or None when there are more
    pieces than ``MAX_PRIMITIVES`` (not a line of digits)."""
    costs = costs or Costs()
    p = Pieces.of(m.mask, m.smooth)
    if len(p) == 0:
        return []
    keep = ~p.edge_like() & (p.area >= 2)
    if not keep.any():
        keep = p.area >= 1
    height = line_height(p, keep)
    if len(p) > 4 * MAX_PRIMITIVES:
        return None
    prims = primitives(m, p, keep, height, costs)
    if len(prims) > MAX_PRIMITIVES:
        return None
    groups = candidate_groups(prims, height, costs)
    items = [cut_digit(m, group_mask(p.labels, [prims[k] for k in range(i, j)]))
             for i, j in groups]  # fmt: skip
    ok = [it for it in items if not it.blank]
    probs = probabilities(np.stack([it.image for it in ok])) if ok else np.zeros((0, 10))
    by_group: dict[tuple[int, int], Digit] = {}
    it_probs = iter(probs)
    for g, it in zip(groups, items, strict=True):
        if not it.blank:
            by_group[g] = Digit(it, next(it_probs))
    path = best_path(prims, by_group, height, costs)
    return [by_group[g] for g in path]


def candidate_groups(prims: list[Primitive], height: float, costs: Costs) -> list[tuple[int, int]]:
    """(i, j): primitives i..j-1 may be one digit: at most ``MAX_GROUP``, no gap over
    ``costs.gap``, no wider than twice a digit, not only small pieces."""
    out = []
    for i in range(len(prims)):
        right = prims[i].x1
        for j in range(i + 1, min(len(prims), i + MAX_GROUP) + 1):
            q = prims[j - 1]
            if j > i + 1 and q.x0 - right > costs.gap * height:
                break
            right = max(right, q.x1)
            if right - min(r.x0 for r in prims[i:j]) > 2 * height:
                break
            if not all(r.small for r in prims[i:j]):
                out.append((i, j))
    return out


def group_mask(labels: np.ndarray, group: list[Primitive]) -> np.ndarray:
    """The work-scale mask of a group's pixels (each primitive: its piece within its columns)."""
    keep = np.zeros(labels.shape, bool)
    for q in group:
        keep[q.y0 : q.y1, q.x0 : q.x1] |= labels[q.y0 : q.y1, q.x0 : q.x1] == q.piece
    return keep


def group_cost(prims: list[Primitive], height: float, costs: Costs) -> float:
    """The geometric cost of reading primitives as one digit (nats, >= 0)."""
    h = (max(q.y1 for q in prims) - min(q.y0 for q in prims)) / height
    w = (max(q.x1 for q in prims) - min(q.x0 for q in prims)) / height
    return costs.short * max(0.0, costs.short_at - h) + costs.wide * max(0.0, w - costs.wide_at)


def best_path(
    prims: list[Primitive], digits: dict[tuple[int, int], Digit], height: float, costs: Costs
) -> list[tuple[int, int]]:
    """The groups of the most probable reading: every primitive in one digit, or left out
    when small."""
    n = len(prims)
    score = np.full(n + 1, -np.inf)
    score[0] = 0.0
    back: list[tuple[int, int]] = [(0, 0)] * (n + 1)  # (i, i): primitive i left out
    for i in range(n):
        left_out = score[i] - (costs.skip if prims[i].small else costs.drop)
        if left_out > score[i + 1]:
            score[i + 1], back[i + 1] = left_out, (i, i)
        for j in range(i + 1, min(n, i + MAX_GROUP) + 1):
            d = digits.get((i, j))
            if d is None:
                continue
            s = score[i] + float(np.log(max(float(d.probs.max()), 1e-12)))
            s -= group_cost(prims[i:j], height, costs)
            if j < n and prims[j].cut_left:
                s -= costs.cut
            if s > score[j]:
                score[j], back[j] = s, (i, j)
    path = []
    j = n
    while j > 0:
        g = back[j]
        if g[1] > g[0]:
            path.append(g)
        j = g[0] if g[1] > g[0] else j - 1
    return path[::-1]
