"""Test sets of many kinds, each made from MNIST digits by a transform stated here.

Each kind is one way a person's image of a digit differs from MNIST: cropped tight, low
resolution, tiny or huge, soft, blocky, a pencil or a fat marker, ruled or squared paper, a
printed box around it, a shadow, chalk on a board, a drawing app's canvas. ``make(kind, digit,
rng)`` draws one MNIST digit that way and encodes it (PNG, or JPEG where a camera would);
``make_set`` draws a whole set, image ``i`` from its own generator ``default_rng([seed, KIND
id, i])``, so any slice is reproducible. Report on sets made from the *test* split; tune only
on their twins made from the *training* split.

Strokes: the kinds that change the pen redraw the digit along its medial axis (the ridge of
the distance transform of MNIST's stroke) with a pen of the stated width, so a 2 px ballpoint
on a 300 px digit is 2 px wide, not MNIST's stroke scaled up.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

Rng = np.random.Generator
WHITE = (0.96, 0.96, 0.95)
TINTS = {
    "cream": (0.95, 0.92, 0.80), "yellow": (0.98, 0.94, 0.58), "blue": (0.84, 0.90, 0.97),
    "grey": (0.78, 0.78, 0.78), "pink": (0.97, 0.84, 0.88), "green": (0.80, 0.92, 0.80),
}  # fmt: skip
INKS = {
    "black": (0.08, 0.08, 0.10), "blue": (0.10, 0.16, 0.55), "red": (0.62, 0.10, 0.12),
    "green": (0.08, 0.40, 0.18),
}  # fmt: skip


@dataclass
class Sample:
    """One image of a kind: encoded bytes, the MNIST label and index it was drawn from."""

    data: bytes
    label: int
    index: int
    kind: str


# --- building blocks ----------------------------------------------------------------------


def tight(digit: np.ndarray) -> np.ndarray:
    """The digit's ink bounding box (pixels > 0), float32 in [0, 1], ink high."""
    d = digit.astype(np.float32) / 255.0
    ys, xs = np.nonzero(d > 0)
    return d[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def scaled(t: np.ndarray, height: int, interp: int = cv2.INTER_CUBIC) -> np.ndarray:
    """MNIST's grey strokes resized to ``height`` px high, aspect kept."""
    w = max(1, round(t.shape[1] * height / t.shape[0]))
    return np.clip(cv2.resize(t, (w, height), interpolation=interp), 0, 1)


def pen(t: np.ndarray, height: int, width: float) -> np.ndarray:
    """The digit redrawn ``height`` px high with a pen ``width`` px wide: coverage in [0, 1].

    Drawn at 100 px high at least (then area-averaged down), so a tiny digit keeps its shape:
    the pen follows the medial axis of MNIST's stroke (its ink above half level).
    """
    f = max(1, int(np.ceil(100 / height)))
    big = scaled(t, height * f, cv2.INTER_LINEAR)
    r = max(0.5, width * f / 2)
    pad = int(np.ceil(r)) + 2  # paper around the stroke, so the ridge ends inside it
    inside = cv2.copyMakeBorder((big > 0.5).astype(np.uint8), *[pad] * 4, cv2.BORDER_CONSTANT)
    dt = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    ridge = (dt >= cv2.dilate(dt, np.ones((3, 3), np.uint8)) - 0.3) & (inside > 0)
    d = cv2.distanceTransform((~ridge).astype(np.uint8), cv2.DIST_L2, 5)
    cover = np.clip(r + 0.5 - d, 0, 1)
    if f > 1:
        h, w = cover.shape
        cover = cv2.resize(cover, (round(w / f), round(h / f)), interpolation=cv2.INTER_AREA)
    return cover.astype(np.float32)


def grain(shape: tuple[int, int], rng: Rng, lo: float, sigma: float = 0.7) -> np.ndarray:
    """Paper or chalk texture: uniform in [lo, 1], blurred a little."""
    g = rng.uniform(lo, 1.0, shape).astype(np.float32)
    return cv2.GaussianBlur(g, (0, 0), sigma)


def page(
    cover: np.ndarray, rng: Rng, margin: tuple[float, float] = (0.3, 1.5)
) -> tuple[np.ndarray, tuple[int, int]]:
    """The digit's coverage placed at a random spot of a larger page: (page, (top, left))."""
    h, w = cover.shape
    ph = h + int(h * rng.uniform(*margin))
    pw = w + int(h * rng.uniform(*margin))
    top, left = int(rng.integers(0, ph - h + 1)), int(rng.integers(0, pw - w + 1))
    out = np.zeros((ph, pw), np.float32)
    out[top : top + h, left : left + w] = cover
    return out, (top, left)


def paint(cover: np.ndarray, paper, ink) -> np.ndarray:
    """Ink over paper by coverage: (H, W, 3) float32."""
    c = cover[..., None]
    return np.asarray(paper, np.float32) * (1 - c) + np.asarray(ink, np.float32) * c


def light(img: np.ndarray, rng: Rng, strength: float) -> np.ndarray:
    """A gradient from one side plus a vignette, up to ``strength`` darker."""
    h, w = img.shape[:2]
    # Smooth: computed on a 64x64 grid and enlarged (a 12 MP page in milliseconds).
    v, u = np.meshgrid(np.linspace(-1, 1, 64), np.linspace(-1, 1, 64), indexing="ij")
    a = rng.uniform(0, 2 * np.pi)
    g = strength * rng.uniform(0.3, 1)
    lit = 1 - g * (0.5 + 0.5 * (np.cos(a) * u + np.sin(a) * v)) - 0.1 * (u**2 + v**2) / 2
    lit = cv2.resize(lit.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return img * lit[..., None]


def encode(img: np.ndarray, fmt: str = "PNG", quality: int = 90, noise: float = 0.0, rng=None):
    """(H, W) or (H, W, 3) float in [0, 1] -> PNG or JPEG bytes, with Gaussian noise."""
    if noise > 0 and rng is not None:
        img = img + noise * rng.standard_normal(img.shape, dtype=np.float32)
    a = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    im = Image.fromarray(a)
    if fmt == "JPEG":
        im.save(buf, "JPEG", quality=quality)
    else:
        im.save(buf, "PNG")
    return buf.getvalue()


def photo(img: np.ndarray, rng: Rng) -> bytes:
    """As a phone saves it: sensor noise, JPEG of quality 60-95."""
    return encode(img, "JPEG", int(rng.integers(60, 96)), float(rng.uniform(0.005, 0.03)), rng)


def mnist_stroke(height: int) -> float:
    """MNIST's median stroke width at this height: 10 px at 80 px high (preprocess.STROKE_*)."""
    return height * 10.0 / 80.0


# --- the kinds ----------------------------------------------------------------------------


def margin(d: np.ndarray, rng: Rng) -> bytes:
    """MNIST's own 28x28 with its margin, dark on white, enlarged to 112x112 (the control)."""
    big = cv2.resize(d.astype(np.float32) / 255, (112, 112), interpolation=cv2.INTER_CUBIC)
    return encode(1 - np.clip(big, 0, 1))


def tight_crop(sides: int) -> Callable[[np.ndarray, Rng], bytes]:
    def make(d: np.ndarray, rng: Rng) -> bytes:
        """Cropped to touch ``sides`` sides of the frame (the others get 10-40 % margin),
        dark on white, the digit 112 px high."""
        t = scaled(tight(d), 112)
        h = t.shape[0]
        pads = [0, 0, 0, 0]  # top, bottom, left, right
        if sides < 4:
            free = rng.permutation(4)[: 4 - sides]
            for s in free:
                pads[s] = int(h * rng.uniform(0.1, 0.4))
        t = cv2.copyMakeBorder(t, *pads, cv2.BORDER_CONSTANT, value=0)
        return encode(1 - t)

    return make


def lowres(size: int) -> Callable[[np.ndarray, Rng], bytes]:
    def make(d: np.ndarray, rng: Rng) -> bytes:
        """The tight crop shrunk to ``size`` px high (area-averaged), then enlarged to 112 px
        (bilinear, as an image viewer does), dark on white."""
        small = scaled(tight(d), size, cv2.INTER_AREA)
        return encode(1 - scaled(small, 112, cv2.INTER_LINEAR))

    return make


def tiny(d: np.ndarray, rng: Rng) -> bytes:
    """12-20 px high, area-averaged, on a white page 2-4x its size, dark ink, PNG."""
    h = int(rng.integers(12, 21))
    cover, _ = page(scaled(tight(d), h, cv2.INTER_AREA), rng, (1.0, 3.0))
    return encode(paint(cover, WHITE, INKS["black"]), noise=0.01, rng=rng)


def huge(d: np.ndarray, rng: Rng) -> bytes:
    """1200-2400 px high, a felt pen 6-12 % of that, on a page up to 3600 px: a close-up
    photo (grey, so that 500 of them render in minutes)."""
    h = int(rng.integers(1200, 2401))
    cover, _ = page(pen(tight(d), h, h * rng.uniform(0.06, 0.12)), rng, (0.1, 0.5))
    img = cv2.addWeighted(cover, -0.86, cover, 0.0, 0.95)  # paper 0.95, ink 0.09
    return photo(light(img[..., None], rng, 0.2)[..., 0], rng)


def soft(d: np.ndarray, rng: Rng) -> bytes:
    """60-200 px high, blurred with a Gaussian of 0.3-0.8 stroke widths (out of focus; at 1.2
    an 8's loops fill in and a person reads a blob)."""
    h = int(rng.integers(60, 201))
    cover, _ = page(pen(tight(d), h, mnist_stroke(h)), rng, (0.4, 1.5))
    cover = cv2.GaussianBlur(cover, (0, 0), mnist_stroke(h) * rng.uniform(0.3, 0.8))
    return photo(paint(cover, WHITE, INKS["black"]), rng)


def blocky(d: np.ndarray, rng: Rng) -> bytes:
    """Scanned at 10-20 px high (half the time bilevel, as a fax), enlarged 4-10x by nearest
    neighbour: square pixels."""
    h = int(rng.integers(10, 21))
    cover, _ = page(scaled(tight(d), h, cv2.INTER_AREA), rng, (0.3, 1.0))
    if rng.random() < 0.5:
        cover = (cover > 0.5).astype(np.float32)
    k = int(rng.integers(4, 11))
    cover = cv2.resize(cover, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST)
    return encode(paint(cover, WHITE, INKS["black"]))


def pen_kind(name: str) -> Callable[[np.ndarray, Rng], bytes]:
    def make(d: np.ndarray, rng: Rng) -> bytes:
        """A pen of its own width on white paper, photographed: pencil (grey, 1.5-3 px, grainy),
        ballpoint (blue/black, 1.5-3.5 px), felt pen (5-9 % of the height), fat marker
        (16-24 % of the height; MNIST's boldest tenth is 17 %)."""
        h = int(rng.integers(100, 401))
        if name == "pencil":
            width, ink = rng.uniform(1.5, 3.0), (0.42, 0.42, 0.45)
        elif name == "ballpoint":
            width, ink = rng.uniform(1.5, 3.5), INKS[str(rng.choice(["black", "blue"]))]
        elif name == "felt":
            width, ink = h * rng.uniform(0.05, 0.09), INKS[str(rng.choice(list(INKS)))]
        else:
            width, ink = h * rng.uniform(0.16, 0.24), INKS[str(rng.choice(["black", "blue"]))]
        cover, _ = page(pen(tight(d), h, width), rng)
        if name == "pencil":
            cover = cover * grain(cover.shape, rng, 0.4)
        return photo(light(paint(cover, WHITE, ink), rng, 0.25), rng)

    return make


def tinted(d: np.ndarray, rng: Rng) -> bytes:
    """Coloured ink (or pencil) on tinted paper under uneven light, 60-250 px high."""
    h = int(rng.integers(60, 251))
    cover, _ = page(pen(tight(d), h, mnist_stroke(h) * rng.uniform(0.6, 1.2)), rng)
    paper = TINTS[str(rng.choice(list(TINTS)))]
    ink = INKS[str(rng.choice(list(INKS)))]
    return photo(light(paint(cover, paper, ink), rng, 0.35), rng)


def white(d: np.ndarray, rng: Rng) -> bytes:
    """Black or blue ink on white paper, even light, 60-250 px high, PNG (a scan)."""
    h = int(rng.integers(60, 251))
    cover, _ = page(pen(tight(d), h, mnist_stroke(h) * rng.uniform(0.6, 1.2)), rng)
    ink = INKS[str(rng.choice(["black", "blue"]))]
    return encode(paint(cover, WHITE, ink), noise=0.01, rng=rng)


def lined(grid: bool) -> Callable[[np.ndarray, Rng], bytes]:
    def make(d: np.ndarray, rng: Rng) -> bytes:
        """Ruled paper (blue lines 0.35-0.7 digit heights apart, a red margin line half the
        time) or squared paper (a grid 0.25-0.5 digit heights), lines 1-3 px, 80-250 px high;
        the digit sits on a line and crosses others."""
        h = int(rng.integers(80, 251))
        cover, (top, left) = page(pen(tight(d), h, mnist_stroke(h) * rng.uniform(0.6, 1.1)), rng)
        ph, pw = cover.shape
        lines = np.zeros_like(cover)
        lw = int(rng.integers(1, 4))
        gap = h * (rng.uniform(0.25, 0.5) if grid else rng.uniform(0.35, 0.7))
        base = top + h - int(rng.uniform(0, 0.15) * h)  # the line the digit sits on
        for y in np.arange(base % gap, ph, gap):
            lines[int(y) : int(y) + lw, :] = 1
        if grid:
            for x in np.arange(rng.uniform(0, gap), pw, gap):
                lines[:, int(x) : int(x) + lw] = 1
        colour = (0.55, 0.70, 0.90) if rng.random() < 0.7 else (0.65, 0.65, 0.68)
        img = paint(lines, WHITE, colour)
        if not grid and rng.random() < 0.5:
            x = int(rng.uniform(0.02, 0.2) * pw)
            img[:, x : x + lw + 1] = (0.85, 0.35, 0.35)
        ink = INKS[str(rng.choice(["black", "blue"]))]
        c = cover[..., None]
        img = img * (1 - c) + np.asarray(ink, np.float32) * c
        return photo(light(img, rng, 0.2), rng)

    return make


def form_cell(d: np.ndarray, rng: Rng) -> bytes:
    """A digit written in a printed box (a form cell): black or grey edges 1-4 px, the digit
    0-20 % of its height from the edges (sometimes touching or crossing one), 0-15 % of paper
    outside the box, 60-200 px high."""
    h = int(rng.integers(60, 201))
    cover = pen(tight(d), h, mnist_stroke(h) * rng.uniform(0.6, 1.1))
    ch, cw = cover.shape
    inner = [int(h * rng.uniform(-0.05, 0.2)) for _ in range(4)]
    bh = ch + inner[0] + inner[1]
    bw = max(cw + inner[2] + inner[3], int(0.7 * bh))
    outer = [int(h * rng.uniform(0, 0.15)) for _ in range(4)]
    ph, pw = bh + outer[0] + outer[1], bw + outer[2] + outer[3]
    digit = np.zeros((ph, pw), np.float32)
    y, x = outer[0] + inner[0], outer[2] + (bw - cw) // 2
    ys, xs = max(0, y), max(0, x)
    digit[ys : y + ch, xs : x + cw] = cover[ys - y : ph - y, xs - x : pw - x][
        : min(ch, ph - ys), : min(cw, pw - xs)
    ]
    box = np.zeros_like(digit)
    lw = int(rng.integers(1, 5))
    cv2.rectangle(box, (outer[2], outer[0]), (outer[2] + bw, outer[0] + bh), 1.0, lw)
    printed = (0.1, 0.1, 0.1) if rng.random() < 0.6 else (0.45, 0.45, 0.5)
    img = paint(box, WHITE, printed)
    ink = INKS[str(rng.choice(["black", "blue"]))]
    c = digit[..., None]
    img = img * (1 - c) + np.asarray(ink, np.float32) * c
    return photo(light(img, rng, 0.15), rng)


def shadow(d: np.ndarray, rng: Rng) -> bytes:
    """A shadow across the page (a hand or the phone): a half-plane through the digit's box
    35-65 % darker, its edge 2-20 % of the page soft, 80-250 px high."""
    h = int(rng.integers(80, 251))
    cover, (top, left) = page(pen(tight(d), h, mnist_stroke(h) * rng.uniform(0.6, 1.1)), rng)
    ph, pw = cover.shape
    img = paint(cover, WHITE, INKS[str(rng.choice(["black", "blue"]))])
    cy = top + h * rng.uniform(0.2, 0.8)
    cx = left + cover.shape[1] * 0 + h * rng.uniform(0.1, 0.6)
    a = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:ph, 0:pw].astype(np.float32)
    dist = (xs - cx) * np.cos(a) + (ys - cy) * np.sin(a)
    soft_px = max(ph, pw) * rng.uniform(0.02, 0.2)
    s = 1 / (1 + np.exp(-dist / soft_px))
    img = img * (1 - rng.uniform(0.35, 0.65) * s)[..., None]
    return photo(img, rng)


def chalk(d: np.ndarray, rng: Rng) -> bytes:
    """Chalk on a black or green board: light, grainy strokes 8-14 % of the height, the board
    smudged with faint wiped chalk, 80-250 px high."""
    h = int(rng.integers(80, 251))
    cover, _ = page(pen(tight(d), h, h * rng.uniform(0.08, 0.14)), rng)
    cover = cover * grain(cover.shape, rng, 0.3, 1.0)
    board = (0.12, 0.13, 0.14) if rng.random() < 0.5 else (0.14, 0.26, 0.20)
    haze = cv2.GaussianBlur(rng.uniform(0, 1, cover.shape).astype(np.float32), (0, 0), h / 4)
    haze = (haze - haze.min()) / max(1e-6, float(np.ptp(haze))) * rng.uniform(0, 0.12)
    img = paint(np.maximum(cover, haze), board, (0.9, 0.9, 0.88))
    return photo(img, rng)


def white_ink(d: np.ndarray, rng: Rng) -> bytes:
    """White or silver gel pen on black or navy paper, 60-250 px high."""
    h = int(rng.integers(60, 251))
    cover, _ = page(pen(tight(d), h, mnist_stroke(h) * rng.uniform(0.5, 1.0)), rng)
    paper = (0.05, 0.05, 0.06) if rng.random() < 0.5 else (0.08, 0.10, 0.25)
    ink = (0.95, 0.95, 0.95) if rng.random() < 0.6 else (0.75, 0.76, 0.78)
    return photo(light(paint(cover, paper, ink), rng, 0.2), rng)


def canvas(low: int, high: int) -> Callable[[np.ndarray, Rng], bytes]:
    def make(d: np.ndarray, rng: Rng) -> bytes:
        """The drawing page's PNG: white strokes of 7 % of 280 px (its brush) on a black
        280x280 canvas, the digit ``low``-``high`` px high, placed at random inside."""
        t = tight(d)
        h = int(rng.integers(low, high + 1))
        h = min(h, int(260 * t.shape[0] / max(1, t.shape[1])))  # a wide digit still fits
        cover = pen(t, max(8, h - 20), 0.07 * 280)
        ch, cw = cover.shape
        out = np.zeros((280, 280), np.float32)
        ch, cw = min(ch, 280), min(cw, 280)
        y, x = int(rng.integers(0, 281 - ch)), int(rng.integers(0, 281 - cw))
        out[y : y + ch, x : x + cw] = cover[:ch, :cw]
        return encode(out)

    return make


KINDS: dict[str, Callable[[np.ndarray, Rng], bytes]] = {
    "margin": margin,
    "tight-1": tight_crop(1),
    "tight-2": tight_crop(2),
    "tight-4": tight_crop(4),
    "lowres-8": lowres(8),
    "lowres-12": lowres(12),
    "lowres-16": lowres(16),
    "tiny": tiny,
    "huge": huge,
    "soft": soft,
    "blocky": blocky,
    "pencil": pen_kind("pencil"),
    "ballpoint": pen_kind("ballpoint"),
    "felt": pen_kind("felt"),
    "marker": pen_kind("marker"),
    "white-paper": white,
    "tinted-paper": tinted,
    "ruled": lined(grid=False),
    "squared": lined(grid=True),
    "form-cell": form_cell,
    "shadow": shadow,
    "chalk": chalk,
    "white-ink": white_ink,
    "canvas": canvas(120, 240),
    "canvas-big": canvas(240, 280),
}
KIND_IDS = {name: i for i, name in enumerate(KINDS)}


def make(kind: str, digit: np.ndarray, rng: Rng) -> bytes:
    """One MNIST digit ((28, 28) uint8, ink high) drawn as ``kind``: encoded image bytes."""
    return KINDS[kind](digit, rng)


def make_set(
    kind: str, images: np.ndarray, labels: np.ndarray, n: int, seed: int = 0, start: int = 0
) -> list[Sample]:
    """Digits ``start .. start + n - 1`` of a split drawn as ``kind``.

    Args:
        kind: a key of :data:`KINDS`.
        images, labels: an MNIST split (test to report, train to tune).
        n: how many.
        seed: the set's seed; image i uses ``default_rng([seed, KIND_IDS[kind], i])``.
        start: the first index.
    """
    out = []
    for i in range(start, min(start + n, len(images))):
        rng = np.random.default_rng([seed, KIND_IDS[kind], i])
        out.append(Sample(make(kind, images[i], rng), int(labels[i]), i, kind))
    return out
