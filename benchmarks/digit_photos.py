"""A realistic test set made from MNIST's test split: digits as ink on paper, photographed.

Each MNIST test digit is redrawn the way a person's digit reaches us: at a random size and
place on a larger page, with a thinner or thicker pen, coloured ink on tinted paper (or chalk
on a dark board), uneven light, a strip of table at the page's edge, dust specks, blur,
sensor noise, and JPEG or PNG. The label is MNIST's, so accuracy on this set says how well
preprocessing recovers what the model was trained on. Image ``i`` of seed ``s`` depends on
nothing else (its own generator), so any slice of the set is reproducible.

``naive28`` is the approach of most tutorials, kept as the baseline: grey, shrink the whole
image to 28x28, invert when the page is light.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageFilter

from mnistkit.infer.images import ImageSource, load_pixels

PAPERS = {
    "white": (0.96, 0.96, 0.95), "cream": (0.95, 0.92, 0.80), "yellow": (0.98, 0.94, 0.58),
    "blue": (0.84, 0.90, 0.97), "grey": (0.78, 0.78, 0.78), "pink": (0.97, 0.84, 0.88),
}  # fmt: skip
INKS = {
    "black": (0.08, 0.08, 0.10), "blue": (0.10, 0.16, 0.55), "red": (0.62, 0.10, 0.12),
    "pencil": (0.42, 0.42, 0.44), "green": (0.08, 0.40, 0.18),
}  # fmt: skip
BOARDS = {"blackboard": (0.12, 0.13, 0.14), "greenboard": (0.14, 0.26, 0.20)}
CHALK = (0.90, 0.90, 0.88)


@dataclass
class Sample:
    """One rendered image: its encoded bytes, MNIST label and index, and how it was made."""

    data: bytes
    label: int
    index: int
    params: dict[str, Any]


def resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow's area average (BOX) down, bilinear up, on float32: the photos of the README's
    figures were rendered with exactly this."""
    h, w = img.shape
    if (w, h) == (width, height):
        return img.astype(np.float32, copy=True)
    method = Image.Resampling.BOX if width <= w and height <= h else Image.Resampling.BILINEAR
    out = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32), mode="F")
    return np.asarray(out.resize((width, height), method), dtype=np.float32)


def dilate(img: np.ndarray, radius: int) -> np.ndarray:
    """Grey dilation over a disk of ``radius`` px (offsets with dy^2 + dx^2 <= r^2 + r)."""
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = (yy**2 + xx**2 <= r * r + r).astype(np.uint8)
    return cv2.dilate(img, disk)


def pen_style(rng: np.random.Generator) -> tuple[str, int, float]:
    """A pen: its name, the dilation radius and the threshold that draw its strokes at 4x
    MNIST scale, where MNIST's strokes are ~10 px wide (mnistkit.preprocess.STROKE_*)."""
    pen = str(rng.choice(["thin", "normal", "thick", "marker"], p=[0.25, 0.35, 0.25, 0.15]))
    radius = {"thin": 0, "normal": 0, "thick": 2, "marker": 4}[pen]
    thr = {"thin": float(rng.uniform(0.6, 0.8)), "normal": 0.45}.get(pen, 0.35)
    return pen, radius, thr


def ink_cover(digit: np.ndarray, radius: int, thr: float, height: int) -> np.ndarray:
    """A MNIST digit's ink drawn with a pen (``pen_style``), ``height`` px high: coverage in
    [0, 1] over its tight box."""
    d = digit.astype(np.float32) / 255.0
    ys, xs = np.nonzero(d > 0)
    t = d[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    # Thicken by a dilation or thin by a higher threshold, then make the edge crisp.
    big = np.clip(resize(t, t.shape[1] * 4, t.shape[0] * 4), 0, 1)
    big = dilate(big, radius) if radius else big
    cover = np.clip((big - thr) / 0.12 + 0.5, 0, 1)
    k = height / t.shape[0]
    return np.clip(resize(cover, max(1, round(t.shape[1] * k)), height), 0, 1)


def render(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, dict[str, Any]]:
    """Draw one MNIST digit as ink on a page and encode it.

    Args:
        digit: (28, 28) uint8, MNIST style (ink high).
        rng: the generator that decides everything random.

    Returns:
        (encoded PNG or JPEG bytes, the parameters drawn).
    """
    pen, radius, thr = pen_style(rng)
    # Size and place on a page; a phone photo is large, a scan or a drawing smaller.
    height = int(np.exp(rng.uniform(np.log(24), np.log(320))))
    cover = ink_cover(digit, radius, thr, height)
    dh, dw = cover.shape
    page_w = min(1200, int(dh * rng.uniform(1.3, 4.0)) + dw)
    page_h = min(1200, int(dh * rng.uniform(1.3, 3.5)))
    px, py = int(rng.integers(0, page_w - dw + 1)), int(rng.integers(0, page_h - dh + 1))
    page_cover = np.zeros((page_h, page_w), np.float32)
    page_cover[py : py + dh, px : px + dw] = cover
    data, params = photograph(page_cover, (px, py, px + dw, py + dh), height, rng)
    return data, {"pen": pen, "height": height, **params}


def photograph(
    page_cover: np.ndarray, box: tuple[int, int, int, int], height: int, rng: np.random.Generator
) -> tuple[bytes, dict[str, Any]]:
    """Ink coverage on a page -> an encoded photo of it: specks, paper and ink (or a board and
    chalk), uneven light, a strip of table clear of ``box`` (x0, y0, x1, y1), blur for a
    digit ``height`` px high, noise, grey or colour, JPEG or PNG."""
    page_h, page_w = page_cover.shape
    page_cover = page_cover.copy()
    px, py, dw, dh = box[0], box[1], box[2] - box[0], box[3] - box[1]
    # Dust and specks: small dots anywhere, in the ink's colour.
    n_specks = int(rng.poisson(4))
    for _ in range(n_specks):
        r = int(rng.integers(1, max(2, height // 40) + 1))
        cy, cx = int(rng.integers(0, page_h)), int(rng.integers(0, page_w))
        page_cover[max(0, cy - r) : cy + r, max(0, cx - r) : cx + r] = float(rng.uniform(0.3, 1))
    chalk = rng.random() < 0.15
    if chalk:
        paper_name = str(rng.choice(list(BOARDS)))
        paper, ink, ink_name = np.array(BOARDS[paper_name]), np.array(CHALK), "chalk"
    else:
        paper_name, ink_name = str(rng.choice(list(PAPERS))), str(rng.choice(list(INKS)))
        paper, ink = np.array(PAPERS[paper_name]), np.array(INKS[ink_name])
    c = page_cover[..., None]
    img = paper * (1 - c) + ink * c
    # Uneven light: a gradient from one side plus a vignette.
    v, u = np.meshgrid(np.linspace(-1, 1, page_h), np.linspace(-1, 1, page_w), indexing="ij")
    angle = rng.uniform(0, 2 * np.pi)
    grad, vignette = float(rng.uniform(0, 0.35)), float(rng.uniform(0, 0.25))
    light = (
        1
        - grad * (0.5 + 0.5 * (np.cos(angle) * u + np.sin(angle) * v))
        - vignette * (u**2 + v**2) / 2
    )
    img = img * light[..., None]
    # A strip of table along one edge of the photo, on a side the digit keeps clear of.
    depth = float(rng.uniform(0.03, 0.1))
    n_left, n_top = max(1, int(depth * page_w)), max(1, int(depth * page_h))
    clear = [
        px > n_left + 2,
        px + dw < page_w - n_left - 2,
        py > n_top + 2,
        py + dh < page_h - n_top - 2,
    ]
    sides = [i for i in range(4) if clear[i]]
    edge = bool(sides) and rng.random() < 0.15
    if edge:
        side = sides[int(rng.integers(len(sides)))]
        region = [np.s_[:, :n_left], np.s_[:, -n_left:], np.s_[:n_top, :], np.s_[-n_top:, :]][side]
        img[region] = np.array([0.30, 0.22, 0.15])
    im = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB")
    blur = float(rng.uniform(0, 1.5)) * max(1.0, height / 100)
    if blur > 0.3:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    noise = float(rng.uniform(0, 0.06))
    arr = np.asarray(im, np.float32) / 255 + rng.normal(0, noise, (page_h, page_w, 3))
    im = Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8), "RGB")
    grey = rng.random() < 0.3
    if grey:
        im = im.convert("L")
    buf = io.BytesIO()
    jpeg = rng.random() < 0.6
    quality = int(rng.integers(40, 96))
    if jpeg:
        im.save(buf, "JPEG", quality=quality)
    else:
        im.save(buf, "PNG")
    params = {
        "page": (page_w, page_h), "paper": paper_name,
        "ink": ink_name, "gradient": round(grad, 3), "vignette": round(vignette, 3),
        "table_edge": edge, "specks": n_specks, "blur": round(blur, 2), "noise": round(noise, 3),
        "grey": grey, "format": f"JPEG q{quality}" if jpeg else "PNG",
    }  # fmt: skip
    return buf.getvalue(), params


def make_set(
    images: np.ndarray, labels: np.ndarray, n: int, seed: int = 0, start: int = 0
) -> list[Sample]:
    """Render MNIST test digits ``start .. start + n - 1``, each with its own generator.

    Args:
        images: (N, 28, 28) uint8, the MNIST *test* split.
        labels: (N,) labels.
        n: how many to render.
        seed: the set's seed; image i uses ``default_rng([seed, i])``.
        start: first index.

    Returns:
        The samples, in index order.
    """
    out = []
    for i in range(start, min(start + n, len(images))):
        data, params = render(images[i], np.random.default_rng([seed, i]))
        out.append(Sample(data, int(labels[i]), i, params))
    return out


def naive28(source: ImageSource) -> np.ndarray:
    """The tutorial approach: grey, resize the whole image to 28x28, invert a light page.

    Returns:
        (28, 28) float32 in [0, 1].
    """
    pix = load_pixels(source).mean(axis=2)
    small = np.clip(resize(pix, 28, 28), 0, 1)
    return (1 - small if small.mean() > 0.5 else small).astype(np.float32)
