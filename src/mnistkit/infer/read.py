"""One answer for one digit or many: an image -> the digits written on it, left to right.

Decoding and the paper/ink step run once (:mod:`mnistkit.infer.inkmap`); the segmentation
(:mod:`mnistkit.infer.segment`) then says how many digits there are and where. When it finds
one, the digit is cut exactly as :func:`mnistkit.preprocess` cuts it (the main piece and the
strokes near it), so a single digit reads as it did before numbers were read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mnistkit.infer.images import MAX_BYTES, MAX_PIXELS, ImageSource, load_scaled
from mnistkit.infer.inkmap import ink_map
from mnistkit.infer.pieces import select_digit
from mnistkit.infer.preprocess import DECODE, Preprocessed, cut_digit, preprocess
from mnistkit.infer.segment import MAX_PRIMITIVES, Costs, Probabilities, segment


@dataclass
class Reading:
    """The digits found, each preprocessed and read; ``refused`` says why none were read
    from an image with ink (too many pieces for a line of digits)."""

    items: list[Preprocessed]
    probs: np.ndarray  # (len(items), 10) calibrated
    refused: str | None = None
    notes: list[str] = field(default_factory=list)


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
    digits = segment(m, probabilities, costs)
    if digits is None:
        why = (f"more than {MAX_PRIMITIVES} pieces of ink: not a line of digits "
               f"(at most about {MAX_PRIMITIVES // 3} digits are read)")  # fmt: skip
        return Reading([], none, refused=why)
    if len(digits) <= 1:
        keep = select_digit(m.mask, m.smooth)
        one = cut_digit(m, keep) if keep is not None and keep.any() else None
        if one is None or one.blank:
            return Reading([], none)
        return Reading([one], probabilities(one.image[None]))
    return Reading([d.item for d in digits], np.stack([d.probs for d in digits]))
