"""What the model made of an image: :class:`Prediction` (the number, its digits, and one
digit's probabilities), and the rule that flags what is probably not a digit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mnistkit.infer.preprocess import Preprocessed
from mnistkit.infer.read import Reading

# Below this top (calibrated) probability a "digit" is likely a scribble, a letter or two
# digits: the answer is still given, flagged. The largest threshold at which the flag falls on
# no more real digits than the rule before calibration (0.5 on the model's own probabilities)
# did: `benchmarks/not_a_digit.py` on `fast` (seed 0, T = 0.43) flags 1.25 % of its 2,000
# held-out training digits and 2.40 % of photos made of them (before: 1.60 and 2.65 %; 0.9
# flags 1.70 %), and 49 % of printed letters and 56 % of scribbles (before: 48 and 57 %).
# At 0.5 on calibrated probabilities it would catch only 7 % of the letters.
MIN_CONFIDENCE = 0.85
# MNIST digits cover 19 % of the 28x28 field on average and under 45 % always; a blob that
# covers more is a smudge, a thumb or a filled shape.
MAX_INK = 0.5


@dataclass
class DigitRead:
    """One digit of a reading: its label, calibrated probability, box and 28x28 input.

    Attributes:
        label: the digit.
        p: its calibrated probability.
        bbox: (x0, y0, x1, y1) in the source image's pixels, or None (a 28x28 array).
        input28: (28, 28) float32 in [0, 1]: what the model saw.
    """

    label: int
    p: float
    bbox: tuple[int, int, int, int] | None
    input28: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        box = list(self.bbox) if self.bbox is not None else None
        return {"label": self.label, "p": round(self.p, 6), "bbox": box}


@dataclass(repr=False)
class Prediction:
    """What the model made of one image: the number written on it, and its digits.

    Attributes:
        number: the digits left to right as a string ("" when none was found).
        digits: each digit read (:class:`DigitRead`), left to right.
        label: the digit, when exactly one was found; else None. So are the three below.
        probabilities: 10 floats summing to 1, index = digit.
        top: (digit, probability) pairs, most probable first (all 10).
        input28: (28, 28) float32 in [0, 1]: the image the model saw.
        not_digit: why this is probably not a digit or a number (blank page, low confidence
            of some digit...), or None.
    """

    label: int | None
    probabilities: list[float] | None
    top: list[tuple[int, float]] | None
    input28: np.ndarray | None
    not_digit: str | None = None
    number: str = ""
    digits: list[DigitRead] = field(default_factory=list)

    def __repr__(self) -> str:  # one line, as a person reads it; input28 stays out
        note = f", not_digit={self.not_digit!r}" if self.not_digit else ""
        if self.label is not None and self.top is not None:
            return f"Prediction(label={self.label}, p={self.top[0][1]:.3f}{note})"
        return f"Prediction(number={self.number!r}, digits={len(self.digits)}{note})"

    def to_dict(self, top_k: int = 3) -> dict[str, Any]:
        """JSON-ready: number, digits (label, p, bbox), label, probabilities, top-k as
        [{"label", "p"}] (null unless exactly one digit), not_digit."""
        one = self.probabilities is not None and self.top is not None
        return {
            "number": self.number,
            "digits": [d.to_dict() for d in self.digits],
            "label": self.label,
            "probabilities": [round(p, 6) for p in self.probabilities or []] if one else None,
            "top": [{"label": k, "p": round(p, 6)} for k, p in (self.top or [])[:top_k]]
            if one
            else None,
            "not_digit": self.not_digit,
        }


def doubt(probs: np.ndarray, item: Preprocessed) -> str | None:
    """Why one digit read is probably not a digit, or None."""
    if item.blank:
        return "blank: no ink found"
    if float(item.image.mean()) > MAX_INK:
        return f"ink covers {item.image.mean():.0%} of the image: a smudge or a filled shape?"
    if float(probs.max()) < MIN_CONFIDENCE:
        return f"low confidence: top probability {float(probs.max()):.2f} < {MIN_CONFIDENCE}"
    return None


def make_prediction(probs: np.ndarray, item: Preprocessed) -> Prediction:
    """The prediction for one digit, as :meth:`Classifier.predict` gives it (blank: none)."""
    if item.blank:
        return Prediction(None, None, None, None, not_digit=doubt(probs, item))
    order = np.argsort(-probs, kind="stable")
    top = [(int(k), float(probs[k])) for k in order]
    digit = DigitRead(top[0][0], top[0][1], item.bbox, item.image)
    return Prediction(label=top[0][0], probabilities=[float(p) for p in probs], top=top,
                      input28=item.image, not_digit=doubt(probs, item), number=str(top[0][0]),
                      digits=[digit])  # fmt: skip


def reading_prediction(reading: Reading) -> Prediction:
    """A :class:`Reading` as a :class:`Prediction`: one digit as :func:`make_prediction`;
    several with ``number`` and ``digits`` only, flagged when any digit is in doubt."""
    if reading.refused:
        return Prediction(None, None, None, None, not_digit=reading.refused)
    if not reading.items:
        return Prediction(None, None, None, None, not_digit="blank: no ink found")
    if len(reading.items) == 1:
        return make_prediction(reading.probs[0], reading.items[0])
    digits, notes = [], []
    for k, (probs, item) in enumerate(zip(reading.probs, reading.items, strict=True)):
        label = int(probs.argmax())
        digits.append(DigitRead(label, float(probs[label]), item.bbox, item.image))
        why = doubt(probs, item)
        if why:
            notes.append(f"digit {k + 1} ({label}): {why}")
    number = "".join(str(d.label) for d in digits)
    return Prediction(None, None, None, None, not_digit="; ".join(notes) or None, number=number,
                      digits=digits)  # fmt: skip
