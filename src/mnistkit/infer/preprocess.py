"""A person's image of a digit -> the 28x28 input MNIST's makers would have produced.

MNIST's recipe (LeCun, Cortes, Burges, http://yann.lecun.com/exdb/mnist/): "The original black
and white (bilevel) images from NIST were size normalized to fit in a 20x20 pixel box while
preserving their aspect ratio. The resulting images contain grey levels as a result of the
anti-aliasing technique used by the normalization algorithm. The images were centered in a
28x28 image by computing the center of mass of the pixels, and translating the image so as to
position this point at the center of the 28x28 field." A model trained on MNIST sees nothing
else, so a photo or a drawing must be brought into that form first:

1. paper: a smooth surface fitted to the page, robust to the ink (uneven light, tinted paper);
2. ink: the difference from the paper along the ink's own colour (polarity comes out of it);
3. the digit: thresholded, split into connected pieces; paper edges (also as whole bands of
   rows along a side) and specks are dropped, a stroke broken into dashes is joined;
4. strokes: made bilevel at half the ink's level, as NIST's originals were; a thin pen or a
   fat marker brought to MNIST's typical stroke width;
5. size: the bounding box fitted into 20x20, aspect kept, area-averaged (anti-aliasing);
6. place: its centre of mass put where MNIST's is, pixel (14, 14) (measured: the 10,000 test
   digits average (13.99, 14.01)).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mnistkit.infer import imageops as ops
from mnistkit.infer.images import MAX_BYTES, MAX_PIXELS, ImageSource, array_to_float, load_pixels

# Working sizes, px. Detection runs on the page shrunk to WORK px at most (a 12 MP photo to
# 1024 x 768: a digit a tenth of the page high is still 77 px); the digit itself is then cut
# from the full image and brought to BOX px high, 4x the final 20, for the stroke work.
WORK = 1024
FIT_GRID = 64
BOX = 80
# Ink must differ from the paper by this fraction of full scale (a pencil on a photo ~0.2).
MIN_CONTRAST = 0.06
# Stroke width at BOX scale, measured with the same estimator on the 10,000 MNIST test digits
# (benchmarks/handwriting.py --calibrate): 10th percentile, median, 90th percentile.
STROKE_P10, STROKE_MEDIAN, STROKE_P90 = 7.4, 10.0, 14.0
JOIN_GAP, JOIN_MASS, DOT = 0.5, 0.05, 2.5  # select_digit: which pieces join the digit
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
    return mnist_style(load_pixels(source, max_bytes=max_bytes, max_pixels=max_pixels))


def mnist_style(pixels: np.ndarray) -> Preprocessed:
    """The pipeline on decoded pixels: (H, W, C) float32 in [0, 1] -> :class:`Preprocessed`."""
    h, w, _ = pixels.shape
    blank = Preprocessed(np.zeros((28, 28), np.float32), blank=True)
    # 1. Paper: fitted on a small grid, evaluated anywhere (coordinates are normalized).
    f = min(1.0, WORK / max(h, w))
    work = ops.resize(pixels, round(w * f), round(h * f))
    fg = min(1.0, FIT_GRID / max(h, w))
    coef = ops.fit_background(ops.resize(pixels, round(w * fg), round(h * fg)))
    resid = work - background(coef, work.shape[:2], (0.0, 0.0, 1.0, 1.0))
    # 2. Ink direction: the mean colour difference of the pixels far from the paper, paper
    # edges (a strip of table in a photo) left out. Projecting on it gives ink > 0 whatever the
    # polarity and the ink colour, and drops noise of the other sign (JPEG halos).
    norm = np.linalg.norm(resid, axis=2)
    # Far from the paper: beyond the paper's own spread, measured robustly on the smoothed
    # distance (median + 6 MADs). The distance is a norm over 3 channels, so its median is
    # not a noise sigma: taking it for one put the threshold over a pencil's contrast on a
    # noisy photo, and the page came out blank.
    bn = blur(norm)
    med = float(np.median(bn))
    spread = 1.4826 * float(np.median(np.abs(bn - med)))
    strong = bn > max(med + 6 * spread, MIN_CONTRAST)
    labels, n = ops.label_components(strong)
    if n == 0:
        return blank
    stats = Pieces.of(labels, n, norm)
    edges = np.nonzero(stats.edge_like())[0] + 1
    on_edge = np.isin(labels, edges) if len(edges) < n else np.zeros_like(strong)
    on_edge |= edge_bands(strong)
    if not (strong & ~on_edge).any():
        on_edge[:] = False
    valid = strong & ~on_edge
    direction = resid[valid].mean(axis=0)
    if np.linalg.norm(direction) < 1e-6:
        return blank
    direction /= np.linalg.norm(direction)
    # 3. The digit: smooth away single-pixel noise, threshold at a third of the ink's level,
    # label connected pieces, keep the main one and pieces near it.
    smooth = blur(np.maximum(resid @ direction, 0.0))
    level = float(np.percentile(smooth[valid], 95))
    if level < MIN_CONTRAST:
        return blank
    noise = 1.4826 * float(np.median(np.abs(smooth - np.median(smooth))))
    # Hysteresis (Canny's): pixels above a low threshold count when they connect to some above
    # a high one, so a faint or thin stroke stays in one piece and faint noise stays out.
    # Paper edges are cut out: at these thresholds a digit near one would join it.
    off_edge = ~ops.dilate(on_edge.astype(np.float32), 1).astype(bool)
    low = (smooth > max(0.15 * level, 3 * noise)) & off_edge
    high = smooth > max(0.35 * level, 4 * noise)
    labels, n = ops.label_components(low)
    mask = np.isin(labels, np.unique(labels[high & low]))
    keep = select_digit(mask, smooth)
    if keep is None:
        return blank
    ys, xs = np.nonzero(keep)
    pad = 2
    y0, y1 = max(0, ys.min() - pad), min(keep.shape[0], ys.max() + 1 + pad)
    x0, x1 = max(0, xs.min() - pad), min(keep.shape[1], xs.max() + 1 + pad)
    # Back to the full image for the digit's own pixels (a small digit on a huge photo).
    fy, fx = h / keep.shape[0], w / keep.shape[1]
    X0, X1 = int(np.floor(x0 * fx)), int(np.ceil(x1 * fx))
    Y0, Y1 = int(np.floor(y0 * fy)), int(np.ceil(y1 * fy))
    crop = pixels[Y0:Y1, X0:X1]
    box_h, box_w = (ys.max() + 1 - ys.min()) * fy, (xs.max() + 1 - xs.min()) * fx
    s = BOX / max(box_h, box_w)  # crop px -> BOX-scale px
    ch, cw = max(1, round(crop.shape[0] * s)), max(1, round(crop.shape[1] * s))
    crop = ops.resize(crop, cw, ch)
    region = (X0 / w, Y0 / h, X1 / w, Y1 / h)
    digit = np.maximum((crop - background(coef, (ch, cw), region)) @ direction, 0.0)
    # Only the chosen pieces (grown a little): specks inside the box stay out.
    piece = ops.resize(keep[y0:y1, x0:x1].astype(np.float32), cw, ch) > 0.01
    digit *= ops.dilate(piece.astype(np.float32), max(1, round(0.04 * BOX))) > 0
    core = digit > 0.5 * np.percentile(digit[digit > 0], 99) if (digit > 0).any() else digit > 0
    hi = float(np.median(digit[core])) if core.any() else 0.0
    if hi <= 0:
        return blank
    # Bilevel, as NIST's originals were: ink where the signal passes half the ink's level (the
    # stroke's edge on a blurred photo). The grey levels come back from the downscale to 20x20,
    # as MNIST's did. Grey kept at this scale filled a fat marker's blurred loops and made a
    # model see 0s in 6s (on a tuning set made from training digits: 25 -> 21 errors of 2,000).
    digit = (digit > INK_LEVEL * hi).astype(np.float32)
    digit, stroke_scale = normalize_stroke(digit)
    image = fit_and_center(digit)
    if not image.any():
        return blank
    polarity = "dark-on-light" if float(direction.sum()) < 0 else "light-on-dark"
    return Preprocessed(
        image=image,
        polarity=polarity,
        contrast=round(level, 4),
        bbox=(
            int(xs.min() * fx),
            int(ys.min() * fy),
            int((xs.max() + 1) * fx),
            int((ys.max() + 1) * fy),
        ),
        stroke_scale=stroke_scale,
    )


def background(coef: np.ndarray, shape: tuple[int, int], region) -> np.ndarray:
    """The fitted paper over ``region`` of the unit image square, sampled on ``shape``."""
    return ops.eval_poly(coef, shape[0], shape[1], region)


def blur(img: np.ndarray) -> np.ndarray:
    """3x3 mean: single-pixel noise and JPEG speckle fall under the threshold."""
    return ops.box_blur(img, 1) if min(img.shape) >= 9 else img


@dataclass
class Pieces:
    """Connected pieces of a mask: per piece (index k = label k + 1) ink, area, box, border."""

    labels: np.ndarray
    mass: np.ndarray
    area: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    contact: np.ndarray  # longest run along one image side, fraction of that side

    @classmethod
    def of(cls, labels: np.ndarray, n: int, ink: np.ndarray) -> Pieces:
        ys, xs = np.nonzero(labels)
        idx = labels[ys, xs] - 1
        h, w = labels.shape
        box = [np.full(n, h), np.full(n, w), np.zeros(n, np.int64), np.zeros(n, np.int64)]
        np.minimum.at(box[0], idx, ys)
        np.minimum.at(box[1], idx, xs)
        np.maximum.at(box[2], idx, ys + 1)
        np.maximum.at(box[3], idx, xs + 1)
        # The longest contact with one side of the image, as a fraction of that side.
        sides = (labels[0], labels[-1], labels[:, 0], labels[:, -1])
        contact = np.max([np.bincount(e, minlength=n + 1)[1:] / len(e) for e in sides], axis=0)
        return cls(
            labels=labels,
            mass=np.bincount(idx, weights=ink[ys, xs], minlength=n),
            area=np.bincount(idx, minlength=n),
            y0=box[0], x0=box[1], y1=box[2], x1=box[3],
            contact=contact,
        )  # fmt: skip

    def edge_like(self) -> np.ndarray:
        """Paper edges: solid pieces lying along an image side for 40 % of its length or more.

        A strip of table or the page's shadow in a photo does, and fills its bounding box; a
        digit in a tight crop may touch a side along a stroke (a 7's bar) but its strokes fill
        a third of its box or less.
        """
        fill = self.area / np.maximum(1, (self.x1 - self.x0) * (self.y1 - self.y0))
        return (self.contact >= 0.4) & (fill >= 0.7)


def edge_bands(mask: np.ndarray, depth: float = 0.15, full: float = 0.9) -> np.ndarray:
    """Paper edges as bands: rows (columns) along an image side that are ink over their whole
    length, with paper after them.

    ``Pieces.edge_like`` misses a strip of table that the smoothing has joined to a digit
    written close to it (a small photo); cutting whole rows does not. A band is at most
    ``depth`` of the image deep, each row at least ``full`` covered, followed within two rows
    by a row of paper (15 % ink at most). A digit in a tight crop can fill its top rows (a
    7's bar) but then reaches the opposite side as well, and is left alone.
    """
    out = np.zeros_like(mask, dtype=bool)
    views = (lambda a: a, lambda a: a[::-1], lambda a: a.T, lambda a: a.T[::-1])
    for view in views:
        m, o = view(mask), view(out)
        cover = m.mean(axis=1)
        n = len(cover)
        d = 0
        while d < max(1, int(depth * n)) and cover[d] >= full:
            d += 1
        if d == 0 or d >= n - 3:
            continue
        e = d
        while e < d + 2 and cover[e] > 0.15:
            e += 1
        if cover[e] > 0.15 or 0 < cover[-1] < full:
            continue
        o[:e] = True
    return out


def select_digit(mask: np.ndarray, ink: np.ndarray) -> np.ndarray | None:
    """The digit's pixels among the mask's connected pieces, or None if there is none.

    The main piece is the one with the most ink that is not a paper edge (a piece running along
    the image border: a table or the page's shadow in a photo). Strokes near the group join it,
    one after another (a 5's flag, a pen lifted mid-stroke, a faint pencil line broken into
    dashes): pieces with at least ``JOIN_MASS`` of the main piece's ink, at most ``JOIN_GAP``
    of the group's size away. Dots do not join: a piece no longer than ``DOT`` stroke widths
    of the main piece is a speck of dust, whatever its ink (beside a thin pen's digit a speck
    can outweigh a stroke).
    """
    labels, n = ops.label_components(mask)
    if n == 0:
        return None
    p = Pieces.of(labels, n, ink)
    candidates = np.nonzero(~p.edge_like() & (p.area >= 2))[0]
    if len(candidates) == 0:
        candidates = np.arange(n)
    main = int(candidates[np.argmax(p.mass[candidates])])
    bx0, by0, bx1, by1 = p.x0[main], p.y0[main], p.x1[main], p.y1[main]
    width = stroke_width(labels[by0:by1, bx0:bx1] == main + 1)
    length = np.maximum(p.x1 - p.x0, p.y1 - p.y0)
    joinable = (p.mass >= JOIN_MASS * p.mass[main]) & (length > DOT * width)
    chosen = {main}
    changed = True
    while changed:
        changed = False
        gap = JOIN_GAP * max(bx1 - bx0, by1 - by0)
        for k in candidates:
            if k in chosen or not joinable[k]:
                continue
            dx = max(bx0 - p.x1[k], p.x0[k] - bx1, 0)
            dy = max(by0 - p.y1[k], p.y0[k] - by1, 0)
            if max(dx, dy) <= gap:
                chosen.add(int(k))
                bx0, by0 = min(bx0, p.x0[k]), min(by0, p.y0[k])
                bx1, by1 = max(bx1, p.x1[k]), max(by1, p.y1[k])
                changed = True
    return np.isin(labels, np.array(sorted(chosen)) + 1)


def stroke_width(digit: np.ndarray) -> float:
    """Mean stroke width in px: 2 x ink area / boundary length (a stroke has two sides)."""
    b = digit > 0.5
    p = np.pad(b, 1)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    boundary = int((b & ~inner).sum())
    return 2.0 * float(b.sum()) / boundary if boundary else 0.0


def normalize_stroke(digit: np.ndarray) -> tuple[np.ndarray, float]:
    """Thicken a thin pen or thin a fat marker into MNIST's range of stroke widths (BOX scale).

    Widths between MNIST's 10th and 90th percentiles are left alone: MNIST has thin and bold
    writers too. Outside, a grey dilation or erosion brings the width to that percentile
    (to the median instead: 48 errors, not 37, on 2,000 photos rendered from training digits
    by :mod:`mnistkit.handwriting`). The digit is padded with paper first: a stroke at the
    very edge of its tight crop (or of the photo) is thickened outwards, and eroded from that
    side too.
    """
    ys, xs = np.nonzero(digit > 0)
    if len(ys) == 0:
        return digit, 1.0
    # px of this array -> px of a digit BOX high (the calibration's scale)
    scale = BOX / max(ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min())
    width = stroke_width(digit) * scale
    if width <= 0:
        return digit, 1.0
    if width < STROKE_P10:
        r = round((STROKE_P10 - width) / 2 / scale)
        if r:
            return ops.dilate(np.pad(digit, r), r), (width + 2 * r * scale) / width
    if width > STROKE_P90:
        r = round((width - STROKE_P90) / 2 / scale)
        thinned = ops.erode(np.pad(digit, r), r) if r else digit
        if r and (thinned > 0.5).sum() > 0.3 * (digit > 0.5).sum():
            return thinned, (width - 2 * r * scale) / width
    return digit, 1.0


def fit_and_center(digit: np.ndarray) -> np.ndarray:
    """Fit the ink's bounding box into 20x20 (aspect kept, area-averaged), centre of mass at
    MNIST's (14, 14) in a 28x28 field. Returns (28, 28) float32 in [0, 1]."""
    ys, xs = np.nonzero(digit > 0)
    if len(ys) == 0:
        return np.zeros((28, 28), np.float32)
    tight = digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    th, tw = tight.shape
    k = 20.0 / max(th, tw)
    small = np.clip(ops.resize(tight, max(1, round(tw * k)), max(1, round(th * k))), 0, 1)
    sh, sw = small.shape
    total = float(small.sum())
    cy = float((small.sum(axis=1) * np.arange(sh)).sum()) / total
    cx = float((small.sum(axis=0) * np.arange(sw)).sum()) / total
    # Integer shift, as the MNIST centre-of-mass spread (+-0.29 px, a rounding's) suggests;
    # clamped so no ink leaves the field.
    top = int(np.clip(round(COM - cy), 0, 28 - sh))
    left = int(np.clip(round(COM - cx), 0, 28 - sw))
    out = np.zeros((28, 28), np.float32)
    out[top : top + sh, left : left + sw] = small
    return out
