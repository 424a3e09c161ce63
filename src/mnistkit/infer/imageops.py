"""Small numpy image operations that preprocessing needs, so that it needs no scipy or OpenCV.

Every function takes and returns plain numpy arrays; images are (H, W) or (H, W, C) float32.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize each channel with Pillow: area averaging (BOX) down, bilinear up.

    BOX averages all source pixels under each target pixel, which is the anti-aliasing LeCun
    describes for MNIST ("the resulting images contain grey levels as a result of the
    anti-aliasing technique used by the normalization algorithm").

    Args:
        img: (H, W) or (H, W, C) float32.
        width, height: target size in pixels, at least 1.

    Returns:
        (height, width) or (height, width, C) float32.
    """
    width, height = max(1, int(width)), max(1, int(height))
    if img.ndim == 3:
        return np.stack([resize(img[..., c], width, height) for c in range(img.shape[2])], axis=-1)
    h, w = img.shape
    if (w, h) == (width, height):
        return img.astype(np.float32, copy=True)
    down = width <= w and height <= h
    method = Image.Resampling.BOX if down else Image.Resampling.BILINEAR
    out = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32), mode="F")
    return np.asarray(out.resize((width, height), method), dtype=np.float32)


def box_blur(img: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window, edges replicated; an integral image makes it O(pixels)."""
    if radius < 1:
        return img.astype(np.float32, copy=True)
    k = 2 * radius + 1
    p = np.pad(img.astype(np.float64), radius, mode="edge")
    c = np.cumsum(np.cumsum(p, axis=0), axis=1)
    c = np.pad(c, ((1, 0), (1, 0)))
    s = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return (s / (k * k)).astype(np.float32)


def disk_offsets(radius: int) -> list[tuple[int, int]]:
    r = int(radius)
    return [
        (dy, dx)
        for dy in range(-r, r + 1)
        for dx in range(-r, r + 1)
        if dy * dy + dx * dx <= r * r + r
    ]


def dilate(img: np.ndarray, radius: int) -> np.ndarray:
    """Grey dilation (max) over a disk: thickens bright strokes by ``radius`` px on each side."""
    return _rank(img, radius, np.maximum, -np.inf)


def erode(img: np.ndarray, radius: int) -> np.ndarray:
    """Grey erosion (min) over a disk: thins bright strokes by ``radius`` px on each side."""
    return _rank(img, radius, np.minimum, np.inf)


def _rank(img: np.ndarray, radius: int, op, fill: float) -> np.ndarray:
    if radius < 1:
        return img.copy()
    r = int(radius)
    p = np.pad(img, r, mode="constant", constant_values=fill)
    h, w = img.shape
    out = img.copy()
    for dy, dx in disk_offsets(r):
        op(out, p[r + dy : r + dy + h, r + dx : r + dx + w], out=out)
    return out


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean mask, without scipy.

    Works on horizontal runs: runs in neighbouring rows that touch are joined with a
    union-find, so the Python loop is over runs (a few thousand), not pixels.

    Args:
        mask: (H, W) bool.

    Returns:
        (labels, n): int32 (H, W) with 0 for background and 1..n for the components.
    """
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int32)
    if h == 0 or w == 0 or not mask.any():
        return labels, 0
    d = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(d == 1)  # run i covers columns [starts[i], ends[i]) of rows[i]
    _, ends = np.nonzero(d == -1)
    n = len(rows)
    stride = w + 2
    start_key = rows.astype(np.int64) * stride + starts
    end_key = rows.astype(np.int64) * stride + ends
    # For each run b in row r+1, the runs a in row r with a.end >= b.start and a.start <= b.end
    # (8-connectivity: diagonal contact counts) are a contiguous range [lo, hi].
    prev = (rows - 1).astype(np.int64) * stride
    lo = np.searchsorted(end_key, prev + starts, side="left")
    hi = np.searchsorted(start_key, prev + ends, side="right") - 1
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for b in np.nonzero(hi >= lo)[0].tolist():
        rb = find(b)
        for a in range(int(lo[b]), int(hi[b]) + 1):
            ra = find(a)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
                rb = min(ra, rb)
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    _, run_label = np.unique(roots, return_inverse=True)
    lengths = ends - starts
    flat = np.repeat(rows.astype(np.int64) * w + starts - np.cumsum(lengths) + lengths, lengths)
    flat += np.arange(len(flat))
    labels.ravel()[flat] = np.repeat(run_label.astype(np.int32) + 1, lengths)
    return labels, int(run_label.max()) + 1


def poly_terms(u: np.ndarray, v: np.ndarray, degree: int = 3) -> np.ndarray:
    """Monomials u^i v^j with i + j <= degree, as columns: (N, terms)."""
    cols = [u**i * v ** (k - i) for k in range(degree + 1) for i in range(k + 1)]
    return np.stack(cols, axis=-1)


def grid_coords(height: int, width: int, box: tuple[float, float, float, float]) -> tuple:
    """Normalized coordinates in [-1, 1] of the pixel centres of a (height, width) grid.

    ``box`` = (x0, y0, x1, y1) is the region of the unit image square the grid covers, so a
    crop resized to any size gets the same coordinates as the whole image it came from.
    """
    x0, y0, x1, y1 = box
    xs = x0 + (np.arange(width) + 0.5) / width * (x1 - x0)
    ys = y0 + (np.arange(height) + 0.5) / height * (y1 - y0)
    v, u = np.meshgrid(ys * 2 - 1, xs * 2 - 1, indexing="ij")
    return u, v


def fit_background(img: np.ndarray, degree: int = 3, keep: float = 0.6) -> np.ndarray:
    """Fit a smooth surface (a polynomial in x, y per channel) to the paper, ignoring the ink.

    Uneven lighting, vignetting and tinted paper are smooth; strokes are not. A least-trimmed-
    squares fit keeps the ``keep`` fraction of points closest to the current surface, so ink
    (usually under 20 % of a page) never pulls it; starting from the median makes the first
    fit already mostly paper.

    Args:
        img: (H, W, C) float32, already small (a 64 x 64 grid is plenty).
        degree: polynomial degree; 3 follows a vignette plus a gradient.
        keep: fraction of points each iteration fits.

    Returns:
        (terms, C) coefficients for :func:`poly_terms` on :func:`grid_coords` of the image.
    """
    h, w, c = img.shape
    u, v = grid_coords(h, w, (0.0, 0.0, 1.0, 1.0))
    a = poly_terms(u.ravel(), v.ravel(), degree).astype(np.float64)
    y = img.reshape(-1, c).astype(np.float64)
    coef: np.ndarray = np.zeros((a.shape[1], c))
    coef[0] = np.median(y, axis=0)
    n_keep = max(a.shape[1] + 1, int(keep * len(y)))
    if len(y) < a.shape[1] + 1:
        return coef
    for _ in range(5):
        resid = np.linalg.norm(y - a @ coef, axis=1)
        idx = np.argpartition(resid, n_keep - 1)[:n_keep]
        # Normal equations: a 10x10 solve, far cheaper than lstsq's SVD on thousands of rows.
        ak = a[idx]
        gram = ak.T @ ak + 1e-9 * np.eye(a.shape[1])
        coef = np.linalg.solve(gram, ak.T @ y[idx])
    return coef


def eval_poly(coef: np.ndarray, height: int, width: int, box: tuple) -> np.ndarray:
    """The surface of :func:`fit_background` on a (height, width) grid over ``box``.

    Separable: u depends on the column and v on the row only, so each channel is
    V @ M @ U.T with M[j, i] the coefficient of u^i v^j: no (H, W, terms) array.

    Returns:
        (height, width, C) float32.
    """
    terms, c = coef.shape
    degree = {1: 0, 3: 1, 6: 2, 10: 3}[terms]
    u, v = grid_coords(1, width, box)[0][0], grid_coords(height, 1, box)[1][:, 0]
    upow = np.stack([u**i for i in range(degree + 1)], axis=1)  # (W, d+1)
    vpow = np.stack([v**j for j in range(degree + 1)], axis=1)  # (H, d+1)
    out = np.empty((height, width, c), np.float32)
    pairs = [(i, k - i) for k in range(degree + 1) for i in range(k + 1)]  # poly_terms order
    for ch in range(c):
        m = np.zeros((degree + 1, degree + 1))
        for t, (i, j) in enumerate(pairs):
            m[j, i] = coef[t, ch]
        out[..., ch] = vpow @ m @ upow.T
    return out
