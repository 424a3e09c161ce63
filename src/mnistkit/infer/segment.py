"""A written number -> its digits, left to right, read by the model that recognizes them.

The classical way (over-segmentation and recognition, as in the reading of NIST's zip codes):

1. primitives: the ink pieces of :class:`~mnistkit.infer.inkmap.InkMap` (paper edges and
   ruled lines already out), in left-to-right order (a sloping line keeps its order), with a
   piece too wide for one digit cut at candidate columns: minima of its ink per column (where
   two touching digits meet the stroke between them is thin);
2. candidates: runs of up to ``MAX_GROUP`` neighbouring primitives (a 5's detached bar, a 4
   broken in two, a dash of a faint stroke: each joins its digit in some run), each cut from
   the page and brought to MNIST's form on its own (:func:`~mnistkit.infer.preprocess.cut_digit`),
   all read by the model in one batch, each also moved by a pixel each way (:func:`steady`);
3. the most probable sequence by dynamic programming over the candidates' log-probabilities,
   with small costs (:class:`Costs`) for a cut through a piece, a candidate much shorter or
   wider than the line's digits, and a small piece left out (a speck).

Costs were tuned on numbers made from MNIST *training* digits (``benchmarks/read_numbers.py
--tune``); the report set is made from test digits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from mnistkit.infer.inkmap import InkMap
from mnistkit.infer.preprocess import Preprocessed, cut_digit, disk

Probabilities = Callable[[np.ndarray], np.ndarray]  # (N, 28, 28) -> (N, 10)
Verifier = Callable[[np.ndarray], np.ndarray]  # (N, 28, 28) -> (N,) log-odds of one whole digit

# Width over height of each digit's ink box in MNIST's 60,000 training digits (pixels over 64),
# as log: mean and standard deviation per class. The model reads "41" squeezed into 20x20 as a
# confident 4: a 4 that wide (1.26 x its height: 2.3 sd over the 4s' mean) is unlikely.
LOG_ASPECT = np.array([(-0.106, 0.196), (-0.931, 0.459), (-0.071, 0.218), (-0.235, 0.212),
                       (-0.241, 0.212), (-0.074, 0.258), (-0.326, 0.217), (-0.264, 0.215),
                       (-0.282, 0.221), (-0.395, 0.205)], np.float32)  # fmt: skip
MAX_GROUP = 6  # primitives in one digit: cut into up to 6 columns, or broken in 6 pieces
# A line with more primitives than this is not read (a page of text, a texture): 40 digits
# each cut in up to three. Reading is linear in primitives; this bounds its time and memory.
MAX_PRIMITIVES = 120


@dataclass(frozen=True)
class Costs:
    """Segmentation costs in nats (log-probability units), and the geometry behind them.

    Line height ``H``: the median height of the pieces with at least a third of the largest
    one's ink. Lengths below are fractions of ``H``. A candidate digit scores ``confidence``
    times the log of its top probability, less ``entropy`` times its probabilities' entropy,
    less the costs of its shape.

    Tuned by coordinate search on 600 numbers and 1,100 single-digit images made from training
    digits (``benchmarks/read_numbers.py --tune``), every setting with ``read.py``'s priors for
    one digit: 78.2 -> 82.3 % numbers exact, 94.1 -> 95.1 % single digits. The model's
    log-probability weighs 3x against geometry, and its entropy counts too: the calibrated
    model reads a digit's fragment or two touching digits with p 0.6-0.95 where a whole digit
    gets 0.99 or more (merges: 12.5 -> 9 % of the numbers).
    """

    confidence: float = 3.0  # times log p of a digit's label
    entropy: float = 2.0  # per nat of entropy of a digit's probabilities
    digit: float = 0.0  # per digit read: a digit's fragments are often read confidently too
    verify: float = 0.0  # times the verifier's log-odds of one whole digit (see VERIFIED)
    cut: float = 0.5  # per stroke a cut crosses (touching digits pulled apart)
    aspect: float = 0.0  # times the squared z-score of a digit's log aspect for its class, / 2
    drop: float = 6.0  # per piece left out (one the model cannot read in any digit)
    short: float = 16.0  # per H a digit is shorter than ``short_at``
    short_at: float = 0.55
    # Per H a digit is wider than ``snug_at``, and ``wide`` more per H past ``wide_at``: an
    # MNIST digit is 0.75 H wide on average, two merged 0.9-1.3 H.
    snug: float = 1.0
    snug_at: float = 0.9
    wide: float = 2.0
    wide_at: float = 1.1
    join: float = 1.25  # per piece joined to a digit it does not overlap in x ...
    join_gap: float = 5.0  # ... and per H of the gap between them
    reach: float = 0.04  # pieces this close are one cluster (a faint stroke's dashes)
    small: float = 0.35  # a piece no longer than this is small: in a digit's box or left out
    attach: float = 0.1  # ... in a digit's box grown by this
    gap: float = 0.35  # pieces further apart than this are never one digit
    cut_from: float = 0.8  # pieces wider than this are offered cuts
    cut_margin: float = 0.12  # no cut closer than this to a piece's end or to another cut


# With a segmentation verifier (:mod:`mnistkit.infer.verifier`): its log-odds of "one whole
# digit" x 0.35 joins each candidate's score. On 400 held-out numbers of training digits
# (benchmarks/verify_segments.py, seed 3) 81.25 -> 85.0 % exact, splits 4.0 -> 1.5 %, merges
# 6.75 -> 5.0 %; weights 0.2-0.5 within a point of it. 1,000 test numbers: 82.7 -> 86.7 %.
VERIFIED = Costs(verify=0.35)


@dataclass
class Primitive:
    """A piece, or the columns ``[c0, c1)`` of one (work scale), in reading order."""

    piece: int  # label in Pieces.labels (k + 1)
    x0: int
    x1: int
    y0: int
    y1: int
    small: bool
    crossed: float = 0.0  # strokes its left edge cuts through (0: a cluster's own edge)


@dataclass
class Digit:
    """One digit read: its preprocessed 28x28 and the model's probabilities."""

    item: Preprocessed
    probs: np.ndarray  # (10,) calibrated
    whole: float = 0.0  # the verifier's log-odds that this is one whole digit; 0 without one


@dataclass
class Clusters:
    """Ink pieces joined where they nearly touch (the dashes of a faint stroke): per cluster
    (label k + 1 in ``labels``, 0 for paper) its box at work scale and its ink."""

    labels: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    mass: np.ndarray

    @classmethod
    def of(cls, mask: np.ndarray, ink: np.ndarray, reach: int) -> Clusters:
        near = cv2.dilate(mask.astype(np.uint8), disk(reach)) if reach > 0 else mask
        n, cl, stats, _ = cv2.connectedComponentsWithStats(near.astype(np.uint8), connectivity=8)
        labels = np.where(mask, cl, 0)
        st = stats[1:].astype(np.int64)
        # The box of the ink itself: the dilated one less the reach, except where the dilation
        # was clipped by the image's side (ink there may reach the side: less the reach cut
        # off its outer columns or rows).
        h, w = mask.shape
        x0 = np.where(st[:, 0] > 0, np.minimum(st[:, 0] + reach, w - 1), 0)
        y0 = np.where(st[:, 1] > 0, np.minimum(st[:, 1] + reach, h - 1), 0)
        right, bottom = st[:, 0] + st[:, 2], st[:, 1] + st[:, 3]
        x1 = np.maximum(np.where(right < w, right - reach, w), x0 + 1)
        y1 = np.maximum(np.where(bottom < h, bottom - reach, h), y0 + 1)
        mass = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=n)[1:]
        return cls(labels, x0, y0, x1, y1, mass)

    def __len__(self) -> int:
        return len(self.mass)


def line_height(c: Clusters) -> float:
    """The height of the line's digits, work px (see :class:`Costs`)."""
    big = c.mass >= c.mass.max() / 3
    return float(np.median(c.y1[big] - c.y0[big]))


def primitives(
    c: Clusters, height: float, costs: Costs, specks: np.ndarray | None = None
) -> list[Primitive]:
    """The clusters, wide ones cut at the minima of their ink per column, in reading order;
    ``specks``: clusters that are small whatever their size."""
    out = []
    for k in range(len(c)):
        if c.mass[k] <= 0:
            continue
        x0, x1, y0, y1 = int(c.x0[k]), int(c.x1[k]), int(c.y0[k]), int(c.y1[k])
        piece = c.labels[y0:y1, x0:x1] == k + 1
        small = max(x1 - x0, y1 - y0) <= costs.small * height
        small |= specks is not None and bool(specks[k])
        cuts: list[tuple[int, float]] = []
        if x1 - x0 > costs.cut_from * height:
            cuts = cut_columns(piece, height, costs)
        edges = [(0, 0.0), *cuts, (x1 - x0, 0.0)]
        for (a, _), (b, _), crossed in zip(edges, edges[1:], [0.0] + [v for _, v in cuts],
                                           strict=False):  # fmt: skip
            rows = np.nonzero(piece[:, a:b].any(axis=1))[0]
            if len(rows) == 0:
                continue
            out.append(Primitive(k + 1, x0 + a, x0 + b, y0 + int(rows[0]), y0 + int(rows[-1]) + 1,
                                 small and not cuts, crossed=crossed))  # fmt: skip
    out.sort(key=lambda q: q.x0 + q.x1)
    return out


def cut_columns(piece: np.ndarray, height: float, costs: Costs) -> list[tuple[int, float]]:
    """Columns to offer as cuts in one cluster, and the ink each crosses.

    Where two digits touch, the stroke between them is thin (a minimum of the ink per column)
    or the outline dips between them: a valley of the upper contour, a peak of the lower one
    (two rings overlapping by a stroke have more ink per column where they meet, not less).
    Candidates of each kind (over 3 columns smoothed), ``cut_margin`` apart and from the ends,
    as many as the piece could hold digits a quarter of the line's height wide.
    """
    raw = piece.sum(axis=0).astype(np.float32)
    w = len(raw)
    margin = max(1, int(round(costs.cut_margin * height)))
    if w <= 2 * margin:
        return []
    rows = np.arange(piece.shape[0], dtype=np.float32)[:, None]
    inked = raw > 0
    top = np.where(inked, np.where(piece, rows, np.inf).min(axis=0), 0)
    bottom = np.where(inked, np.where(piece, rows, -np.inf).max(axis=0), piece.shape[0])
    box = np.ones(3, np.float32) / 3
    chosen: list[int] = []
    limit = max(1, int(w / (height / 4)))
    # Lowest ink first, then the deepest dips of the outline.
    for signal in (raw, -top, bottom):
        sm = np.convolve(signal, box, mode="same")
        sm[0], sm[-1] = np.inf, np.inf
        inner = np.arange(margin, w - margin)
        minima = inner[(sm[inner] <= sm[inner - 1]) & (sm[inner] <= sm[inner + 1])]
        for c in sorted(minima.tolist(), key=lambda c: sm[c]):
            if len(chosen) >= limit:
                break
            if all(abs(c - d) >= margin for d in chosen):
                chosen.append(int(c))
    # Strokes crossed: runs of ink down the column (touching digits meet in one; a cut through
    # a 0 crosses two, through an 8 three).
    runs = (np.diff(piece.astype(np.int8), axis=0, prepend=0) == 1).sum(axis=0)
    return [(c, float(runs[c])) for c in sorted(chosen)]


@dataclass
class Lattice:
    """Every way to read a line: its primitives, and each candidate digit (a run ``i..j-1``
    of them) read by the model."""

    prims: list[Primitive]
    height: float
    digits: dict[tuple[int, int], Digit]
    labels: np.ndarray | None = None  # the clusters (work scale), for :func:`group_mask`
    specks: list[Primitive] = field(default_factory=list)


def segment(
    m: InkMap, probabilities: Probabilities, costs: Costs | None = None,
    verifier: Verifier | None = None,
) -> tuple[list[Digit], float, float] | None:  # fmt: skip
    """The digits of ``m``'s ink, left to right ([] for none), the reading's score, and the
    geometric cost of taking all the ink as one digit (nats); None when there are more pieces
    than ``MAX_PRIMITIVES`` (not a line of digits). ``verifier``: see :data:`VERIFIED`."""
    costs = costs or Costs()
    lat = lattice(m, probabilities, costs, verifier)
    if lat is None:
        return None
    path, score = best_reading(lat, costs)
    whole = group_cost(lat.prims, lat.height, costs) if lat.prims else 0.0
    return [lat.digits[g] for g in path], score, whole


def lattice(
    m: InkMap, probabilities: Probabilities, costs: Costs, verifier: Verifier | None = None
) -> Lattice | None:
    """Primitives and candidate digits of ``m``'s ink, all read in one batch; None when there
    are too many pieces."""
    p = m.pieces
    if len(p) == 0:
        return Lattice([], 0.0, {})
    if len(p) > 4 * MAX_PRIMITIVES:
        return None
    keep = ~p.edge_like() & (p.area >= 2)
    if not keep.any():
        keep = p.area >= 1
    mask = np.r_[False, keep][p.labels]
    # The line's height from its strokes, not from specks of dust (p.dots).
    strokes = keep & ~p.dots
    stroke_px = np.r_[False, strokes][p.labels] if strokes.any() else mask
    height = line_height(Clusters.of(stroke_px, m.smooth, 0))
    c = Clusters.of(mask, m.smooth, int(round(costs.reach * height)))
    # A cluster of specks alone is small whatever the line's height: a thin pen's digit
    # broken in pieces the size of specks makes the line look short.
    solid = np.bincount(c.labels[stroke_px], minlength=len(c) + 1)
    every = primitives(c, height, costs, specks=solid[1:] == 0)
    # Small pieces (specks, a stroke's loose end) are no digit alone: each goes with the
    # candidate digit whose box holds it, or with none.
    prims = [q for q in every if not q.small]
    specks = [q for q in every if q.small]
    if len(prims) > MAX_PRIMITIVES:
        return None
    groups = candidate_groups(prims, height, costs)
    items = [cut_digit(m, *group_mask(c.labels, prims[i:j], specks, costs.attach * height))
             for i, j in groups]  # fmt: skip
    read = [(g, it) for g, it in zip(groups, items, strict=True) if not it.blank]
    if not read:
        return Lattice(prims, height, {}, c.labels, specks)
    batch = np.stack([it.image for _, it in read])
    probs = steady(probabilities, batch)
    whole = verifier(batch) if verifier is not None else np.zeros(len(read))
    digits = {g: Digit(it, pr, float(v))
              for (g, it), pr, v in zip(read, probs, whole, strict=True)}  # fmt: skip
    return Lattice(prims, height, digits, c.labels, specks)


# Each candidate is read as cut and moved by a pixel up, down, left and right, and the five
# probabilities averaged: a whole digit reads alike under a pixel's shift, a fragment or two
# digits merged less so, and the path search weighs the average's confidence. Numbers of
# training digits (two sets of 1,000, the tuning model): 84.8 -> 85.9 % and 85.7 -> 86.2 %
# exact; single-digit photos 97.48 -> 97.50 % (5,000) and kinds 97.39 -> 97.41 % (12,500).
# The digits' p is better calibrated too: ECE 1.52 -> 0.91 % and 1.27 -> 0.69 %.
SHIFTS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def steady(probabilities: Probabilities, batch: np.ndarray) -> np.ndarray:
    """Probabilities of each image of ``batch`` (N, 28, 28), averaged over :data:`SHIFTS`."""
    h, w = batch.shape[1:]
    padded = np.pad(batch, ((0, 0), (1, 1), (1, 1)))
    views = [padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in SHIFTS]
    return probabilities(np.concatenate(views)).reshape(len(SHIFTS), len(batch), -1).mean(0)


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
            top = min(r.y0 for r in prims[i:j])
            bottom = max(r.y1 for r in prims[i:j])
            if max(bottom - top, right - prims[i].x0) > costs.small * height:
                out.append((i, j))
    return out


def group_mask(
    labels: np.ndarray, group: list[Primitive], specks: list[Primitive], margin: float
) -> tuple[np.ndarray, tuple[int, int]]:
    """A group's pixels (each primitive: its cluster within its columns, and the specks within
    ``margin`` of their box) in the window of their box, and its corner (y, x), work scale."""
    y0, x0 = min(q.y0 for q in group), min(q.x0 for q in group)
    y1, x1 = max(q.y1 for q in group), max(q.x1 for q in group)
    group = group + [q for q in specks if q.x0 >= x0 - margin and q.x1 <= x1 + margin
                     and q.y0 >= y0 - margin and q.y1 <= y1 + margin]  # fmt: skip
    y0, x0 = min(q.y0 for q in group), min(q.x0 for q in group)
    y1, x1 = max(q.y1 for q in group), max(q.x1 for q in group)
    keep = np.zeros((y1 - y0, x1 - x0), bool)
    for q in group:
        win = labels[q.y0 : q.y1, q.x0 : q.x1] == q.piece
        keep[q.y0 - y0 : q.y1 - y0, q.x0 - x0 : q.x1 - x0] |= win
    return keep, (y0, x0)


def group_cost(prims: list[Primitive], height: float, costs: Costs) -> float:
    """The geometric cost of reading primitives as one digit (nats, >= 0)."""
    h = (max(q.y1 for q in prims) - min(q.y0 for q in prims)) / height
    w = (max(q.x1 for q in prims) - min(q.x0 for q in prims)) / height
    cost = costs.short * max(0.0, costs.short_at - h) + costs.wide * max(0.0, w - costs.wide_at)
    cost += costs.snug * max(0.0, w - costs.snug_at)
    # Two digits side by side are two pieces apart in x; the parts of one (a 5's bar, a 4
    # broken in two) overlap in x or touch. Columns of one piece cut apart join back freely.
    left, right = prims[0].x0, prims[0].x1
    for prev, q in zip(prims, prims[1:], strict=False):
        if q.piece != prev.piece:
            overlap = min(right, q.x1) - max(left, q.x0)
            if overlap <= 0:
                cost += costs.join + costs.join_gap * -overlap / height
        left, right = min(left, q.x0), max(right, q.x1)
    return cost


def aspect_cost(prims: list[Primitive], label: int) -> float:
    """-log of the likelihood of the group's aspect for a digit ``label`` (MNIST's, as a
    normal distribution of log width/height), up to a constant: z^2 / 2."""
    h = max(q.y1 for q in prims) - min(q.y0 for q in prims)
    w = max(q.x1 for q in prims) - min(q.x0 for q in prims)
    mean, sd = LOG_ASPECT[label]
    z = (np.log(max(w, 1) / max(h, 1)) - mean) / sd
    return float(z * z / 2)


def digit_scores(probs: np.ndarray, costs: Costs) -> np.ndarray:
    """What the model says of candidate digits, (N, 10) -> (N,) nats: ``confidence`` x log of
    the top probability less ``entropy`` x the probabilities' entropy."""
    logp = np.log(np.maximum(probs.astype(np.float64), 1e-12))
    return costs.confidence * logp.max(axis=1) + costs.entropy * (np.exp(logp) * logp).sum(axis=1)


def best_path(lat: Lattice, costs: Costs) -> list[tuple[int, int]]:
    """The groups of the most probable reading (see :func:`best_reading`)."""
    return best_reading(lat, costs)[0]


def best_reading(lat: Lattice, costs: Costs) -> tuple[list[tuple[int, int]], float]:
    """The groups of the most probable reading, every primitive in one digit or left out
    (dearly), and its score (nats: log-probabilities less costs)."""
    prims, digits, height = lat.prims, lat.digits, lat.height
    n = len(prims)
    probs = np.array([d.probs for d in digits.values()]).reshape(-1, 10)
    said = dict(zip(digits, digit_scores(probs, costs).tolist(), strict=True))  # nats, per group
    score = np.full(n + 1, -np.inf)
    score[0] = 0.0
    back: list[tuple[int, int]] = [(0, 0)] * (n + 1)  # (i, i): primitive i left out
    for i in range(n):
        left_out = score[i] - costs.drop
        if left_out > score[i + 1]:
            score[i + 1], back[i + 1] = left_out, (i, i)
        for j in range(i + 1, min(n, i + MAX_GROUP) + 1):
            d = digits.get((i, j))
            if d is None:
                continue
            s = score[i] + said[(i, j)]
            s -= group_cost(prims[i:j], height, costs) + costs.digit
            s += costs.verify * d.whole
            if costs.aspect:
                s -= costs.aspect * aspect_cost(prims[i:j], int(d.probs.argmax()))
            if j < n and prims[j].crossed > 0:
                s -= costs.cut * prims[j].crossed
            if s > score[j]:
                score[j], back[j] = s, (i, j)
    path = []
    j = n
    while j > 0:
        g = back[j]
        if g[1] > g[0]:
            path.append(g)
        j = g[0] if g[1] > g[0] else j - 1
    return path[::-1], float(score[n])
