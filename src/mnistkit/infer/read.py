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
from mnistkit.infer.inkmap import InkMap, ink_map
from mnistkit.infer.pieces import select_digit
from mnistkit.infer.preprocess import DECODE, Preprocessed, cut_digit, extent, preprocess
from mnistkit.infer.segment import (
    LOG_ASPECT,
    MAX_PRIMITIVES,
    VERIFIED,
    Costs,
    Probabilities,
    Verifier,
    segment,
)


@dataclass(frozen=True)
class OneDigit:
    """When the digit that :func:`~mnistkit.infer.pieces.select_digit` finds is the reading.

    Searched with the segmentation's costs (``benchmarks/read_numbers.py --tune``) on numbers
    and single-digit images made from training digits. A digit with a broken stroke must stay
    one digit, yet two touching digits often have the aspect of one wide digit (a "36" read as
    a 2 at z 2.0), and a 1 beside a 0 hardly widens it.
    """

    ink: float = 0.8  # share of the page's ink in the digit found: no segmentation ...
    z: float = 1.6  # ... when its aspect is within this many sd of its class's, and ...
    gap: float = 0.08  # ... it is one piece or no gap across it is wider than this x its height
    share: float = 0.6  # under this share, the ink is several digits
    # With a verifier, no segmentation also needs its log-odds of one whole digit over this:
    # two touching digits shaped like one wide digit ("89" read as a 0) are not.
    whole: float = -2.0
    # Prior for one digit (nats) against the segmentation's best reading; less for one piece of
    # ink, since a one-piece page not shaped like one digit is mostly two touching digits.
    prior: float = 4.25
    lone_prior: float = 2.75
    # The aspect's cost (z^2 / 2) stops growing here: a wide 7's long bar or a 6 lying on its
    # side is one digit that wide, which a normal law calls too unlikely. Of 10,000 photos of
    # training digits 261 are read wrong (12 as several digits) and of 500 of each kind 326
    # (9); with no cap 265 (18) and 329 (25); numbers of training digits read alike. At 2.0,
    # 1,000 numbers of digits 15,000.. lost 0.2 points.
    z_cap: float = 2.5


@dataclass(frozen=True)
class Look:
    """How much the digit found looks like all there is (see :func:`look`)."""

    share: float  # of the page's ink (paper edges aside)
    z: float  # z-score of its aspect over its class's mean (0 when narrower)
    lone: bool  # the page holds one piece of ink, specks aside
    gap: float  # widest column of paper across the digit, x its height

    def alone(self, one: OneDigit) -> bool:
        """Shaped like one digit with nothing beside it: read without segmentation."""
        return (self.lone or self.gap <= one.gap) and self.share >= one.ink and self.z <= one.z

    def single(
        self, p: float, whole: float, costs: Costs, one: OneDigit, verified: float = 0.0
    ) -> float:
        """The score of reading the page as this one digit (top probability ``p``): as the
        segmentation scores a digit (``verified``: the verifier's log-odds of one whole digit), its
        aspect for its class (a z-score counted up to ``one.z_cap``) and ``whole``, the
        geometric cost of all the ink as one digit, with a prior; -inf when it holds too little
        ink."""
        if self.share < one.share:
            return -np.inf
        prior = one.lone_prior if self.lone else one.prior
        said = costs.confidence * float(np.log(max(p, 1e-12))) + costs.verify * verified
        return said - min(self.z, one.z_cap) ** 2 / 2 - whole + prior


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
    priors: OneDigit | None = None,
    verifier: Verifier | None = None,
) -> Reading:
    """Find and read every digit of an image (see the module's docstring).

    Args:
        source: anything :func:`mnistkit.preprocess` takes; a (28, 28) array is one digit.
        probabilities: (N, 28, 28) -> (N, 10) calibrated probabilities (the classifier's).
        max_bytes, max_pixels: limits on the image.
        costs: the segmentation's costs (default: the tuned ones, ``segment.VERIFIED`` with
            a verifier).
        priors: when the one digit found alone is the reading (default: the tuned ones).
        verifier: (N, 28, 28) -> (N,) log-odds that each candidate digit is one whole digit
            (:mod:`mnistkit.infer.verifier`); None reads without one.

    Raises:
        ImageError, ImageTooLargeError: as :func:`mnistkit.preprocess`.
    """
    costs = costs or (VERIFIED if verifier is not None else Costs())
    one_digit = priors or OneDigit()
    none = np.zeros((0, 10), np.float32)
    if isinstance(source, np.ndarray) and np.squeeze(source).shape == (28, 28):
        item = preprocess(source)
        if item.blank:
            return Reading([], none)
        return Reading([item], probabilities(item.image[None]))
    pixels, scale = load_scaled(source, max_bytes=max_bytes, max_pixels=max_pixels, max_side=DECODE)
    m = ink_map(pixels, scale)
    found_one = one_digit_of(m, probabilities) if m is not None else None
    if m is None or found_one is None:
        return Reading([], none)
    one, probs, seen = found_one
    verified = float(verifier(one.image[None])[0]) if verifier is not None else 0.0
    if seen.alone(one_digit) and (verifier is None or verified >= one_digit.whole):
        return Reading([one], probs)  # shaped like one digit, nothing beside it: no segmentation
    found = segment(m, probabilities, costs, verifier)
    if found is None:
        why = (f"more than {MAX_PRIMITIVES} pieces of ink: not a line of digits "
               f"(at most about {MAX_PRIMITIVES // 3} digits are read)")  # fmt: skip
        return Reading([], none, refused=why)
    digits, score, whole = found
    p = float(probs[0].max())
    if len(digits) <= 1 or score < seen.single(p, whole, costs, one_digit, verified):
        return Reading([one], probs)
    return Reading([d.item for d in digits], np.stack([d.probs for d in digits]))


def one_digit_of(
    m: InkMap, probabilities: Probabilities
) -> tuple[Preprocessed, np.ndarray, Look] | None:
    """The digit :func:`~mnistkit.infer.pieces.select_digit` finds on ``m``, its probabilities
    (1, 10) and how alone it looks; None for no digit."""
    keep = select_digit(m.mask, m.smooth, m.pieces)
    one = cut_digit(m, keep) if keep is not None and keep.any() else None
    if keep is None or one is None or one.blank:
        return None
    probs = probabilities(one.image[None])
    return one, probs, look(m, keep, int(probs[0].argmax()))


def widest_gap(keep: np.ndarray) -> float:
    """The widest column of paper across the ink, x its height: the pieces of a digit broken
    by a pencil or a rule overlap in x; two digits side by side stand apart."""
    y0, y1, x0, x1 = extent(keep) or (0, 1, 0, 1)
    cols = keep[y0:y1, x0:x1].any(0)
    edges = np.flatnonzero(np.diff(np.r_[1, cols.astype(np.int8), 1]))  # starts/ends of runs
    gaps = edges[1::2] - edges[::2] if not cols.all() else np.zeros(1)
    return float(gaps.max()) / (y1 - y0)


def look(m: InkMap, keep: np.ndarray, label: int) -> Look:
    """How much the digit :func:`~mnistkit.infer.pieces.select_digit` found (``keep``) looks
    like all there is on the page ``m``: its share of the page's ink (paper edges aside), the
    z-score of its aspect over the mean of MNIST's ``label`` s (log width / height; 0 when
    narrower), whether the page holds one piece of ink, specks aside (a digit nearly always
    is; a number, when its digits touch), and its widest gap.

    On photos of one digit made from training digits, the segmentation alone cut 2.5 % in two
    (a wide 0 read as a 6 and a 1)."""
    p = m.pieces
    y0, y1, x0, x1 = extent(keep) or (0, 1, 0, 1)
    # Specks of dust off the digit are not ink of the page's.
    held = np.zeros(len(p), bool)
    held[np.unique(p.labels[y0:y1, x0:x1][keep[y0:y1, x0:x1]]) - 1] = True
    mass = p.mass[~p.edge_like() & (held | ~p.dots)]
    share = float(m.smooth[y0:y1, x0:x1][keep[y0:y1, x0:x1]].sum()) / max(float(mass.sum()), 1e-9)
    mean, sd = LOG_ASPECT[label]
    z = max(0.0, (np.log((x1 - x0) / (y1 - y0)) - mean) / sd)
    lone = bool(len(mass) and (mass >= 0.1 * mass.max()).sum() == 1)
    return Look(share, float(z), lone, widest_gap(keep))
