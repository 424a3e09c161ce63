"""One answer for one digit or many: an image -> the digits written on it, left to right.

Decoding and the paper/ink step run once (:mod:`mnistkit.infer.inkmap`); the segmentation
(:mod:`mnistkit.infer.segment`) then says how many digits there are and where. When it finds
one, the digit is cut exactly as :func:`mnistkit.preprocess` cuts it (the main piece and the
strokes near it), so a single digit reads as it did before numbers were read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mnistkit.infer.images import MAX_BYTES, MAX_PIXELS, ImageSource, load_scaled
from mnistkit.infer.inkmap import ink_map
from mnistkit.infer.pieces import Pieces, select_digit
from mnistkit.infer.preprocess import DECODE, Preprocessed, cut_digit, preprocess
from mnistkit.infer.segment import LOG_ASPECT, MAX_PRIMITIVES, Costs, Probabilities, segment

# When the digit that select_digit finds is read alone (``alone``, ``read_digits``). First
# chosen by hand on 300 numbers and 300 single-digit photos made from training digits (a prior
# for one digit of 3 nats, 8 for one piece of ink, read 73.7 % of the numbers exactly and cut
# 2.0 % of the single digits in two; 6 (10) read 70.7 % and cut 1.0 %); then searched with the
# segmentation's costs (``segment.Costs``), on 600 numbers and 1,100 single digits: a pair of
# touching digits often has the aspect of one wide digit (a "36" read as a 2 at z 2.0).
ALONE_INK = 0.8  # share of the page's ink in the one digit found: no segmentation ...
ALONE_Z = 1.6  # ... when its aspect is within this many sd of its class's (and it is one piece)
ALONE_GAP = 0.08  # ... or when no gap across it is wider than this x its height
ALONE_SHARE = 0.6  # under this share, the ink is several digits
ONE_PRIOR = 4.25
LONE_PRIOR = 2.75


@dataclass
class Reading:
    """The digits found, each preprocessed and read; ``refused`` says why none were read
    from an image with ink (too many pieces for a line of digits)."""

    items: list[Preprocessed]
    probs: np.ndarray  # (len(items), 10) calibrated
    refused: str | None = None


def read_digits(
    source: ImageSource,
    probabilities: Probabilities,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    costs: Costs | None = None,
) -> Reading:
    """Find and read every digit of an image (see the module's docstring).

    Args:
        source: anything :func:`mnistkit.preprocess` takes; a (28, 28) array is one digit.
        probabilities: (N, 28, 28) -> (N, 10) calibrated probabilities (the classifier's).
        max_bytes, max_pixels: limits on the image.
        costs: the segmentation's costs (default: the tuned ones).

    Raises:
        ImageError, ImageTooLargeError: as :func:`mnistkit.preprocess`.
    """
    none = np.zeros((0, 10), np.float32)
    if isinstance(source, np.ndarray) and np.squeeze(source).shape == (28, 28):
        item = preprocess(source)
        if item.blank:
            return Reading([], none)
        return Reading([item], probabilities(item.image[None]))
    pixels, scale = load_scaled(source, max_bytes=max_bytes, max_pixels=max_pixels, max_side=DECODE)
    m = ink_map(pixels, scale)
    if m is None:
        return Reading([], none)
    pieces = Pieces.of(m.mask, m.smooth)  # once: the digit, its share and the segmentation
    keep = select_digit(m.mask, m.smooth, pieces)
    one = cut_digit(m, keep) if keep is not None and keep.any() else None
    if keep is None or one is None or one.blank:
        return Reading([], none)
    probs = probabilities(one.image[None])
    share, z, lone = alone(pieces, m.smooth, keep, int(probs[0].argmax()))
    if (lone or unbroken(keep)) and share >= ALONE_INK and z <= ALONE_Z:
        return Reading([one], probs)  # shaped like one digit, nothing beside it: no segmentation
    found = segment(m, probabilities, costs, pieces)
    if found is None:
        why = (f"more than {MAX_PRIMITIVES} pieces of ink: not a line of digits "
               f"(at most about {MAX_PRIMITIVES // 3} digits are read)")  # fmt: skip
        return Reading([], none, refused=why)
    digits, score, whole = found
    # The reading as one digit: its log-probability less the costs of its shape (as the
    # segmentation counts them, and its aspect for its class), plus a prior for one digit.
    single = -np.inf
    if share >= ALONE_SHARE:
        prior = LONE_PRIOR if lone else ONE_PRIOR
        top = float(np.log(max(float(probs[0].max()), 1e-12)))
        single = (costs or Costs()).confidence * top - z * z / 2 - whole + prior
    if len(digits) <= 1 or score < single:
        return Reading([one], probs)
    return Reading([d.item for d in digits], np.stack([d.probs for d in digits]))


def unbroken(keep: np.ndarray) -> bool:
    """No column of paper across the ink wider than ``ALONE_GAP`` of its height: the pieces of
    a digit broken by a pencil or a rule overlap in x; two digits side by side stand apart."""
    ys, xs = np.nonzero(keep)
    cols = np.zeros(xs.max() + 1 - xs.min(), bool)
    cols[xs - xs.min()] = True
    edges = np.flatnonzero(np.diff(np.r_[1, cols.astype(np.int8), 1]))  # starts/ends of runs
    gaps = edges[1::2] - edges[::2] if not cols.all() else np.zeros(1)
    return float(gaps.max()) <= ALONE_GAP * (ys.max() + 1 - ys.min())


def alone(p: Pieces, ink: np.ndarray, keep: np.ndarray, label: int) -> tuple[float, float, bool]:
    """How much the digit :func:`~mnistkit.infer.pieces.select_digit` found (``keep``) looks
    like all there is among the pieces ``p`` of the page's ink ``ink``: its share of that ink
    (paper edges aside), the z-score of its aspect over the mean of MNIST's ``label`` s (log
    width / height; 0 when narrower), and whether the page holds one piece of ink, specks
    aside (a digit nearly always is; a number, when its digits touch).

    On photos of one digit made from training digits, the segmentation alone cut 2.5 % in two
    (a wide 0 read as a 6 and a 1)."""
    mass = p.mass[~p.edge_like()]
    ys, xs = np.nonzero(keep)
    share = float(ink[ys, xs].sum()) / max(float(mass.sum()), 1e-9)
    mean, sd = LOG_ASPECT[label]
    z = max(0.0, (np.log((xs.max() + 1 - xs.min()) / (ys.max() + 1 - ys.min())) - mean) / sd)
    return share, float(z), bool(len(mass) and (mass >= 0.1 * mass.max()).sum() == 1)
