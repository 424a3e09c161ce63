"""The paper under a person's ink, and the ink's colour: steps 1-2 of :mod:`mnistkit.infer.preprocess`.

The border says which side is paper (dark ink on light paper, or chalk on a board); a
morphological opening wider than any stroke (in ink-up units) takes the strokes out and leaves
the paper with its light and shadows, however much of the frame the ink covers. A flat border
(a drawing app's canvas) is the paper as it is. The ink is then the difference from the paper
along the ink's own colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The paper is estimated on the image shrunk to GRID px.
GRID = 128
# The opening that takes strokes out of the paper is this fraction of the grid's short side
# wide: a fat marker's stroke in a tight crop is a quarter of the digit's height.
PAPER_KERNEL = 0.4
# Ink must differ from the paper by this fraction of full scale (a pencil on a photo ~0.2).
MIN_CONTRAST = 0.06
# ... and at least this many times the strokes' width, unless they are wider than STROKE_CAP of
# the frame's short side (stroke_kernel).
STROKE_KERNEL, STROKE_CAP = 1.5, 0.7
RAW_LIGHT_TAIL = 4.0  # polarity, on the image as it is: the light tail's reach for light ink
FRAME_INK = 0.20  # polarity: ink over this share of the frame may be the paper


@dataclass
class Paper:
    """The paper under the ink, and which way the ink goes.

    ``surface`` is the paper on a small grid (``grid``: the image shrunk to it), or one value
    (a flat canvas; ``grid`` is then None).
    """

    surface: np.ndarray | float | np.floating  # (h, w) or (h, w, C) float32, or one colour
    sign: float  # +1: ink lighter than paper (chalk, a canvas); -1: darker (pen on paper)
    grid: np.ndarray | None = None


def grey_of(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def estimate_paper(work: np.ndarray) -> Paper:
    """The paper of ``work`` ((H, W) or (H, W, C) float32), whatever share the ink covers."""
    grey = grey_of(work)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    paper = float(np.median(border))
    if (np.abs(border - paper) <= 2 / 255).mean() >= 0.95:
        # A flat border (a drawing app's canvas, a scan): the paper is that value; the ink is
        # whatever differs from it, taken together.
        sign = 1.0 if float(grey.mean()) > paper else -1.0
        flat = np.median(np.concatenate([work[0], work[-1]]), axis=0)
        return Paper(flat.astype(np.float32) if work.ndim == 3 else float(flat), sign)
    h, w = grey.shape
    f = min(1.0, GRID / max(h, w))
    size = (max(1, round(w * f)), max(1, round(h * f)))
    small = cv2.resize(work, size, interpolation=cv2.INTER_AREA)
    # Morphology on noise is biased by its extremes (an opening sits 2-3 sigma under the
    # paper: on small noisy photos the whole page came out as ink). The area average above
    # tames the noise of a large image; a small one is averaged here instead.
    if f > 0.25:
        small = cv2.blur(small, (3, 3))
    # Wider than a stroke across a long, narrow crop too (a 1 cropped tight).
    k = max(3, int(max(PAPER_KERNEL * min(small.shape[:2]), 0.25 * max(small.shape[:2]))) | 1)
    sign = polarity(grey)
    k = max(k, stroke_kernel(grey_of(small), sign))
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    # In ink-up units (u = sign * pixels) the strokes are narrow bright features: an opening
    # wider than any stroke takes them out. It keeps the paper's light and shadows (wider than
    # k) but overshoots a slope near the frame's edge by up to the slope times k/2 (a light
    # gradient across a photo: 0.07, as much as a pencil's contrast), so the smooth part of the
    # light is fitted first (a quadratic, on the pixels the opening calls paper) and the
    # opening works on what is left.
    u = sign * small
    near = u - cv2.morphologyEx(u, cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_REPLICATE)
    near = near if near.ndim == 2 else near.max(axis=2)
    trend = fit_quadratic(u, near < max(0.05, 0.5 * float(np.percentile(near, 99))))
    rest = u - trend
    surface = trend + cv2.morphologyEx(
        rest, cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_REPLICATE
    )
    # No paper is lighter than the lightest pixel (darker, for chalk). A stroke blurred wider
    # than the kernel passes for paper, the fit bows under it and swings past white at the
    # corners, and the corners came out as ink: a 1 enlarged from 16 px read as "11".
    floor = u.reshape(-1, u.shape[2]).min(axis=0) if u.ndim == 3 else u.min()
    surface = np.maximum(surface, floor)
    return Paper(sign * surface, sign, small)


def stroke_kernel(grey: np.ndarray, sign: float) -> int:
    """An opening wide enough to take out the strokes of ``grey`` (the grid): ``STROKE_KERNEL``
    times their width, the 95th percentile of twice the distance to paper over the ink of an
    Otsu split; 0 when that "ink" is over ``STROKE_CAP`` of the frame's short side (a shadow
    or a dark half of the page, not a stroke).

    The kernel as a share of the frame is narrower than a blurred stroke enlarged from a
    low-resolution scan: the paper followed the stroke's soft flanks and the stroke came out
    hollow. On 1,000 training digits each (58,000..58,999): lowres-8 243 -> 104 errors,
    lowres-12 59 -> 26, lowres-16 13 -> 8; shadow 22 -> 23 (with a cap of 1.0: 30)."""
    u8 = np.clip(grey * 255, 0, 255).astype(np.uint8)
    way = cv2.THRESH_BINARY if sign > 0 else cv2.THRESH_BINARY_INV
    _, ink = cv2.threshold(u8, 0, 1, way + cv2.THRESH_OTSU)
    if not ink.any():
        return 0
    dist = cv2.distanceTransform(ink, cv2.DIST_L2, 3)[ink > 0]
    k = int(0.95 * (dist.size - 1))
    width = 2 * float(np.partition(dist, k)[k])
    if width > STROKE_CAP * min(grey.shape):
        return 0
    return int(STROKE_KERNEL * width) | 1


def ink_signal(
    img: np.ndarray, paper: Paper, direction, surface, signed: bool = False
) -> np.ndarray:
    """Ink minus paper along the ink's colour, ink positive, negatives cut unless ``signed``:
    (H, W) float32. ``surface`` is the paper projected on ``direction`` (one channel), at
    ``img``'s size or one value."""
    proj = img if direction is None else cv2.transform(img, direction[None, :].astype(np.float32))
    diff = (paper.sign * (proj - surface)).astype(np.float32, copy=False)
    return diff if signed else np.maximum(diff, 0.0)


def projected_surface(paper: Paper, direction, size: tuple[int, int]):
    """The paper along the ink's colour, at ``size`` (w, h) or one value for a flat canvas."""
    surf = paper.surface
    if direction is not None:
        surf = np.asarray(surf, np.float32) @ direction.astype(np.float32)
    if isinstance(surf, np.ndarray) and surf.ndim == 2:
        return cv2.resize(surf, size, interpolation=cv2.INTER_LINEAR)
    return float(surf)


def polarity(grey: np.ndarray) -> float:
    """+1 when the ink is lighter than the paper, -1 when darker.

    The ink is the tail of the grey levels that reaches further from the median, when one tail
    reaches twice as far as the other: first once the image's tilt (a plane fitted to it: a
    light gradient) is taken out, then as the image is. Otherwise (the ink is much of the
    frame, as in a tight crop: the median is in it) the paper is what the border shows, and
    the ink lies on the median's side of it; with neither, dark ink on light paper. On 60
    images of each kind made from training digits, the tail ratio 2 got every polarity right;
    1.5 got 6 low-resolution crops wrong, 3 one ballpoint. A strip of dark table or a big
    digit at one side tilts the plane until its tails are level: then the border alone
    said "light ink" for 6 of 4,992 photos of training digits (15,000..), and the tails as
    they are got all 6 right. Undetrended, a shadow over most of the page makes its lit corner
    a light tail (2.1-2.2 times the ink's), so there the light tail must reach
    ``RAW_LIGHT_TAIL`` times as far (chalk on a board: 13 times): 2,500 shadows of training
    digits 0 wrong (3 at twice), 500 of each other kind 25 -> 14 wrong.
    """
    step = max(1, int(np.sqrt(grey.size / 16384)))
    g = grey[::step, ::step]
    h, w = g.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = np.stack([np.ones(h * w, np.float32), xx.ravel(), yy.ravel()], axis=1)
    coef = lstsq(a, g.reshape(-1, 1))
    flat = g - (a @ coef).reshape(h, w).astype(np.float32)  # the tilt taken out
    for d, light_ratio in ((flat, 2.0), (g, RAW_LIGHT_TAIL)):
        lo, med, hi = np.percentile(d, [0.2, 50, 99.8])
        dark, light = med - lo, hi - med
        if dark > 2 * light or light > light_ratio * dark:
            return -1.0 if dark > light or paper_is_light(g) else 1.0
    med = float(np.median(g))
    border = float(np.median(np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])))
    return 1.0 if med - border > 0.05 else -1.0


def paper_is_light(g: np.ndarray) -> bool:
    """Whether what the tails call light ink is rather the paper of a bold dark digit cut
    tight: the light side of Otsu's split covers over ``FRAME_INK`` of the frame and most of
    its border.

    The tails assume the ink is few pixels. A bold 0 or 8 cut tight is mostly ink, and its
    paper (the corners, the loops) is then the far tail: the model saw the paper and read a
    frame (18 of the 53 errors on 2,000 tight crops of training digits). Ink may cover much
    of a crop, but the border of a digit's crop is mostly paper. Only this way round: a
    vignette or a shadow darkens a photo's border, and dark ink read as light on 1,000 photos
    of training digits (9 more errors), while nothing lightens a dark board's."""
    u8 = np.clip(g * 255, 0, 255).astype(np.uint8)
    t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    light = u8 > t
    if float(light.mean()) < FRAME_INK:
        return False
    border = np.concatenate([light[0], light[-1], light[1:-1, 0], light[1:-1, -1]])
    return float(border.mean()) > 0.6


def lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares by the normal equations: a 6x6 solve, not an SVD of thousands of rows."""
    a64 = a.astype(np.float64)
    gram = a64.T @ a64 + 1e-9 * np.eye(a.shape[1])
    return np.linalg.solve(gram, a64.T @ b.astype(np.float64)).astype(np.float32)


def fit_quadratic(u: np.ndarray, paper: np.ndarray) -> np.ndarray:
    """A smooth surface in x, y (per channel) least-squares fitted to ``u`` where ``paper``.

    A quadratic where the paper is most of the frame (a vignette); a plane where it is less
    (a quadratic fitted to a rim of paper swings wildly inside: a tight crop came out as a
    filled wedge); the paper's median where it is a quarter or less.
    """
    h, w = paper.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx, yy = xx / max(1, w - 1) * 2 - 1, yy / max(1, h - 1) * 2 - 1
    share = float(paper.mean())
    n_terms = 6 if share >= 0.6 else 3 if share > 0.25 else 1
    terms = np.stack([np.ones_like(xx), xx, yy, xx * xx, xx * yy, yy * yy][:n_terms], axis=-1)
    flat_u = u.reshape(h * w, -1)
    sel = paper.ravel()
    if sel.sum() < 12:
        sel = np.ones_like(sel)
    a = terms.reshape(h * w, -1)
    step = max(1, int(sel.sum()) // 4096)  # a few thousand points fix six coefficients
    coef = lstsq(a[sel][::step], flat_u[sel][::step])
    return (a @ coef).reshape(u.shape).astype(np.float32)


def ink_direction(resid: np.ndarray, strong: np.ndarray) -> np.ndarray | None:
    """The ink's colour as a unit vector (``resid``: (N, C) ink minus paper): the mean
    difference from the paper where it is large. Projecting on it gives ink > 0 for any ink colour and drops noise of the other
    sign (JPEG halos)."""
    d = resid[strong].mean(axis=0) if strong.any() else resid.mean(axis=0)
    n = float(np.linalg.norm(d))
    return d / n if n > 1e-6 else None
