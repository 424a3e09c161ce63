"""A person's image of a digit -> the 28x28 input MNIST's makers would have produced.

MNIST's recipe (LeCun, Cortes, Burges, http://yann.lecun.com/exdb/mnist/): "The original black
and white (bilevel) images from NIST were size normalized to fit in a 20x20 pixel box while
preserving their aspect ratio. The resulting images contain grey levels as a result of the
anti-aliasing technique used by the normalization algorithm. The images were centered in a
28x28 image by computing the center of mass of the pixels, and translating the image so as to
position this point at the center of the 28x28 field." A model trained on MNIST sees nothing
else, so a photo or a drawing must be brought into that form first:

1. paper: the image's border says which side is paper (dark ink on light paper, or chalk on a
   board); a morphological closing (opening for light ink) wider than any stroke takes the
   strokes out and leaves the paper with its light and shadows, however much of the frame the
   ink covers. A flat border (a drawing app's canvas) is the paper as it is;
2. ink: the difference from the paper along the ink's own colour;
3. the digit: a threshold between paper and ink (Otsu's split, kept above the noise), pieces
   joined by hysteresis; paper edges, ruled lines and printed box edges dropped, specks left
   out, a stroke broken into dashes joined;
4. strokes: made bilevel at half the ink's level, as NIST's originals were; a thin pen or a
   fat marker brought to MNIST's typical stroke width;
5. size: the bounding box fitted into 20x20, aspect kept, area-averaged (anti-aliasing);
6. place: its centre of mass put where MNIST's is, pixel (14, 14) (measured: the 10,000 test
   digits average (13.99, 14.01)).

Image operations are OpenCV's. On one thread, decoding included (``mnistkit bench infer``,
the 2-core EPYC, quiet): a 4000x3000 JPEG photo 38 ms, a 1000x1000 JPEG 18-20 ms, the drawing
page's 280x280 PNG 1.9 ms, where the numpy operations before took 3,015, 372 and 12 ms.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import cv2
import numpy as np

from mnistkit.infer.images import MAX_BYTES, MAX_PIXELS, ImageSource, array_to_float, load_scaled
from mnistkit.infer.inkmap import InkMap, ink_map, unit
from mnistkit.infer.paper import ink_signal
from mnistkit.infer.pieces import select_digit, stroke_width

# Working sizes, px. A JPEG is decoded at a reduced scale down to DECODE px (a 12 MP photo as
# 1000 x 750: a digit a tenth of the page high is still 75 px); detection runs on the image
# shrunk nearer to 512 px (``inkmap.WORK``); a digit under BOX px there is cut from the decoded
# image instead. The digit is brought to BOX px high, 4x the final 20, for the stroke work.
DECODE = 1000
BOX = 80
# Stroke width at BOX scale, measured with the same estimator on the 10,000 MNIST test digits
# (benchmarks/handwriting.py --calibrate): 10th percentile, median, 90th percentile.
STROKE_P10, STROKE_MEDIAN, STROKE_P90 = 7.4, 10.0, 14.0
INK_LEVEL = 0.55  # ink/paper boundary, fraction of the ink's typical level
COM = 14.0  # MNIST's centre of mass, pixel index, both axes


@dataclass
class Preprocessed:
    """The 28x28 image a model sees, and what preprocessing found on the way.

    Attributes:
        image: (28, 28) float32 in [0, 1], ink high, as MNIST stores it.
        blank: True when no ink was found (an empty page); ``image`` is then all zeros.
        polarity: "dark-on-light", "light-on-dark" or None (blank, or a 28x28 array as is).
        contrast: ink minus paper, fraction of full scale.
        bbox: (x0, y0, x1, y1) of the digit in the source image's pixels, or None.
        stroke_scale: how much the strokes were thickened (>1) or thinned (<1); 1 if neither.
    """

    image: np.ndarray
    blank: bool = False
    polarity: str | None = None
    contrast: float = 0.0
    bbox: tuple[int, int, int, int] | None = None
    stroke_scale: float = 1.0
    notes: list[str] = field(default_factory=list)


def preprocess(
    source: ImageSource, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS
) -> Preprocessed:
    """Turn any image of one handwritten digit into MNIST's 28x28 form.

    Args:
        source: a path, bytes, a binary file, a PIL image or a numpy array. A (28, 28) array is
            taken as already MNIST-style and only scaled to [0, 1] (uint8 / 255).
        max_bytes: refuse encoded files larger than this (ImageTooLargeError).
        max_pixels: refuse images with more pixels than this (ImageTooLargeError).

    Returns:
        A :class:`Preprocessed` with the image and what was found.

    Raises:
        ImageError: not an image, empty, truncated or of an unsupported type.
        ImageTooLargeError: over ``max_bytes`` or ``max_pixels``.
    """
    if isinstance(source, np.ndarray) and np.squeeze(source).shape == (28, 28):
        img = array_to_float(np.squeeze(source))[..., 0]
        return Preprocessed(np.clip(img, 0, 1).astype(np.float32), blank=not img.any())
    pixels, scale = load_scaled(source, max_bytes=max_bytes, max_pixels=max_pixels, max_side=DECODE)
    return mnist_style(pixels, scale)


def mnist_style(pixels: np.ndarray, scale: float = 1.0) -> Preprocessed:
    """The pipeline on decoded pixels: (H, W, C) uint8, or float32 in [0, 1] ->
    :class:`Preprocessed`. ``scale``: source px per decoded px (for the bbox)."""
    m = ink_map(pixels, scale)
    keep = select_digit(m.mask, m.smooth, m.pieces) if m is not None else None
    if m is None or keep is None or not keep.any():
        return Preprocessed(np.zeros((28, 28), np.float32), blank=True)
    return cut_digit(m, keep)


def cut_digit(m: InkMap, keep: np.ndarray, origin: tuple[int, int] = (0, 0)) -> Preprocessed:
    """Steps 4-6 for the digit made of ``keep``'s pixels: its ink cut from the page, strokes
    made bilevel and normalized, fitted and centred in 28x28.

    ``keep``: a work-scale mask of ``m``, or of a window of it whose top-left corner is at
    ``origin`` (y, x): a number's digits are cut from windows (a full-page mask per candidate
    digit made a 6-digit number 4x slower).
    """
    blank = Preprocessed(np.zeros((28, 28), np.float32), blank=True)
    f, src, ink, paper, direction, surface = m.f, m.src, m.ink, m.paper, m.direction, m.surface
    box = extent(keep)
    if box is None:
        return blank
    ky0, ky1, kx0, kx1 = box  # in keep
    wh, ww = ink.shape
    h, w = src.shape[:2]
    pad = 2
    by0, by1, bx0, bx1 = ky0 + origin[0], ky1 + origin[0], kx0 + origin[1], kx1 + origin[1]
    y0, y1 = max(0, by0 - pad), min(wh, by1 + pad)
    x0, x1 = max(0, bx0 - pad), min(ww, bx1 + pad)
    local = np.zeros((y1 - y0, x1 - x0), np.float32)
    local[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0] = keep[ky0:ky1, kx0:kx1]
    fy, fx = h / wh, w / ww
    box_h, box_w = (by1 - by0) * fy, (bx1 - bx0) * fx
    s = BOX / max(box_h, box_w)  # source px -> BOX-scale px
    if f < 1 and max(by1 - by0, bx1 - bx0) < BOX:
        # A small digit on a big page: its own pixels from the full image.
        X0, X1 = int(np.floor(x0 * fx)), int(np.ceil(x1 * fx))
        Y0, Y1 = int(np.floor(y0 * fy)), int(np.ceil(y1 * fy))
        crop = unit(src[Y0:Y1, X0:X1])
        if isinstance(surface, np.ndarray):
            surface = cv2.resize(
                surface[y0:y1, x0:x1], (X1 - X0, Y1 - Y0), interpolation=cv2.INTER_LINEAR
            )
        digit = ink_signal(crop, paper, direction, surface)
    else:
        digit, s = ink[y0:y1, x0:x1], s * fy
    ch, cw = max(1, round(digit.shape[0] * s)), max(1, round(digit.shape[1] * s))
    down = ch <= digit.shape[0]
    digit = cv2.resize(digit, (cw, ch), interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR)
    # Only the chosen pieces (grown a little): specks and line stubs inside the box stay out.
    # (Area-averaged, not nearest: a piece 2 px wide shrunk to 1 px is kept.)
    piece = cv2.resize(
        local,
        (cw, ch),
        interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR,
    )
    piece = (piece > 0).astype(np.uint8)
    grow = max(1, round(0.04 * BOX))
    digit *= cv2.dilate(piece, disk(grow)) > 0
    on = digit[digit > 0]
    if on.size == 0:
        return blank
    core = digit > 0.5 * quantile(on, 0.99)
    hi = quantile(digit[core], 0.5)
    if hi <= 0:
        return blank
    # Bilevel, as NIST's originals were: ink where the signal passes half the ink's level (the
    # stroke's edge on a blurred photo). The grey levels come back from the downscale to 20x20,
    # as MNIST's did. Grey kept at this scale filled a fat marker's blurred loops and made a
    # model see 0s in 6s (on a tuning set made from training digits: 25 -> 21 errors of 2,000).
    bilevel = (digit > INK_LEVEL * hi).astype(np.float32)
    bilevel, stroke_scale = normalize_stroke(bilevel)
    image = fit_and_center(bilevel)
    if not image.any():
        return blank
    return Preprocessed(
        image=image,
        polarity="light-on-dark" if paper.sign > 0 else "dark-on-light",
        contrast=round(m.level, 4),
        bbox=m.source_box(np.array([bx0, bx1 - 1]), np.array([by0, by1 - 1])),
        stroke_scale=stroke_scale,
    )


def extent(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of a 2-D mask's True pixels (ends exclusive), or None if there are
    none: from its rows and columns, since np.nonzero of a canvas-sized digit's pixels cost a
    quarter of ``cut_digit`` (0.3 of 1.1 ms)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def quantile(a: np.ndarray, q: float) -> float:
    """``np.quantile(a, q)`` (linear interpolation) by one partial sort: on a canvas's 10,000
    ink pixels the two that ``cut_digit`` takes cost 0.42 ms through np.percentile/np.median,
    most of it their generality."""
    a = a.ravel()
    if a.size == 0:
        return float("nan")
    at = q * (a.size - 1)
    k = int(at)
    if k + 1 >= a.size:
        return float(np.partition(a, k)[k])
    lo, hi = np.partition(a, (k, k + 1))[[k, k + 1]]
    return float(lo + (hi - lo) * (at - k))


@functools.lru_cache(maxsize=64)  # two per image, 0.1 ms each to build
def disk(radius: int) -> np.ndarray:
    """A disk structuring element (offsets with dy^2 + dx^2 <= r^2 + r); read-only."""
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    out = (yy**2 + xx**2 <= r * r + r).astype(np.uint8)
    out.flags.writeable = False
    return out


def normalize_stroke(digit: np.ndarray) -> tuple[np.ndarray, float]:
    """Thicken a thin pen or thin a fat marker into MNIST's range of stroke widths (BOX scale).

    Widths between MNIST's 10th and 90th percentiles are left alone: MNIST has thin and bold
    writers too. Outside, a dilation or erosion brings the width to that percentile (to the
    median instead: 48 errors, not 37, on 2,000 photos rendered from training digits). The
    digit is padded with paper first: a stroke at the very edge of its tight crop (or of the
    photo) is thickened outwards, and eroded from that side too.
    """
    box = extent(digit > 0)
    if box is None:
        return digit, 1.0
    # px of this array -> px of a digit BOX high (the calibration's scale)
    scale = BOX / max(box[1] - box[0], box[3] - box[2])
    width = stroke_width(digit) * scale
    if width <= 0:
        return digit, 1.0
    if width < STROKE_P10:
        r = round((STROKE_P10 - width) / 2 / scale)
        if r:
            return cv2.dilate(np.pad(digit, r), disk(r)), (width + 2 * r * scale) / width
    if width > STROKE_P90:
        r = round((width - STROKE_P90) / 2 / scale)
        thinned = cv2.erode(np.pad(digit, r), disk(r)) if r else digit
        if r and (thinned > 0.5).sum() > 0.3 * (digit > 0.5).sum():
            return thinned, (width - 2 * r * scale) / width
    return digit, 1.0


def fit_and_center(digit: np.ndarray) -> np.ndarray:
    """Fit the ink's bounding box into 20x20 (aspect kept, area-averaged), centre of mass at
    MNIST's (14, 14) in a 28x28 field. Returns (28, 28) float32 in [0, 1]."""
    box = extent(digit > 0)
    if box is None:
        return np.zeros((28, 28), np.float32)
    tight = digit[box[0] : box[1], box[2] : box[3]]
    th, tw = tight.shape
    k = 20.0 / max(th, tw)
    size = (max(1, round(tw * k)), max(1, round(th * k)))
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    small = np.clip(cv2.resize(tight, size, interpolation=interp), 0, 1)
    sh, sw = small.shape
    total = float(small.sum())  # (not cv2.moments: it takes an N x 2 array for N points)
    if total <= 0:
        return np.zeros((28, 28), np.float32)
    cy = float(small.sum(axis=1) @ np.arange(sh)) / total
    cx = float(small.sum(axis=0) @ np.arange(sw)) / total
    # Integer shift, as the MNIST centre-of-mass spread (+-0.29 px, a rounding's) suggests;
    # clamped so no ink leaves the field.
    top = min(max(round(COM - cy), 0), 28 - sh)
    left = min(max(round(COM - cx), 0), 28 - sw)
    out = np.zeros((28, 28), np.float32)
    out[top : top + sh, left : left + sw] = small
    return out
