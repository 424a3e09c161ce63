"""Training the segmentation verifier (:mod:`mnistkit.infer.verifier`) with torch.

Its examples are the candidates the segmentation itself cuts (``segment.lattice``) from numbers
written with MNIST training digits as clean ink (no photo: 40 ms a number, where rendering and
reading a photographed one takes 200), each labelled by the ink it holds: which digit owns each
pixel of the page is known from the rendering.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from mnistkit.fileio import write_atomic
from mnistkit.infer import segment as sg
from mnistkit.infer.inkmap import ink_map
from mnistkit.infer.verifier import VERIFIER_FILE, WIDTHS, shapes

# 2,400 numbers give ~77,000 candidates. Read by a model that never saw their digits
# (benchmarks/fewer_digits.py: `fast` on 14,500 digits, two seeds, 800 numbers each of digits
# 15,000-39,999 and 40,000-57,999), 800 numbers' worth read 81.0-82.1 % of numbers exactly,
# 2,400 numbers' 82.5-83.1 % (merges 5.8-7.9 -> 4.5-5.9 %); 800 numbers for 8 epochs instead,
# 82.3-82.4 %. About 50 s for the candidates and 120 s for the net on the 2-core EPYC.
NUMBERS = 2400
EPOCHS = 4

# A number as people write one (benchmarks/number_photos.py): gaps between the digits' boxes
# from slightly overlapping (touching strokes) to wide, x the height; a sloping baseline; each
# digit's height and place off the line jittered.
GAP = (-0.12, 0.55)
SLOPE = 0.12
JITTER = 0.05
HEIGHT = (36, 72)  # px: strokes of 3-6 px, as the photos' digits at work scale
PEN = (0.3, 0.7)  # where the stroke's edge is drawn, of MNIST's grey level: bold to thin
# A candidate is whole when one digit owns this share of its ink and it holds this share of
# that digit's ink; garbage under ``LOOSE`` either way; in between it teaches nothing.
WHOLE, LOOSE = 0.9, 0.75


def clean_number(
    digits: list[np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits (28x28, ink high) written in a row as dark ink on white paper: the page
    (H, W, 1) uint8 and which digit (k + 1, 0 for paper) owns each pixel."""
    height = int(rng.integers(*HEIGHT))
    slope = float(rng.uniform(-SLOPE, SLOPE))
    pen = float(rng.uniform(*PEN))
    covers = []
    for d in digits:
        ys, xs = np.nonzero(d > 0.1 * d.max())
        ink = d[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
        ink = ink / max(float(ink.max()), 1e-6)
        h = max(8, round(height * float(np.clip(1 + rng.normal(0, JITTER), 0.85, 1.15))))
        w = max(2, round(ink.shape[1] * h / ink.shape[0]))
        big = cv2.resize(ink, (w, h), interpolation=cv2.INTER_LINEAR)
        # A pen's crisp edge, thin to bold (the photos' pens: benchmarks/digit_photos.py).
        covers.append(np.clip((big - pen) / 0.12 + 0.5, 0, 1))
    xs_at = [0]
    for c in covers[:-1]:
        xs_at.append(xs_at[-1] + c.shape[1] + round(float(rng.uniform(*GAP)) * height))
    tops = [slope * x - c.shape[0] + rng.normal(0, JITTER) * height
            for x, c in zip(xs_at, covers, strict=True)]  # fmt: skip
    top, margin = min(tops), height // 2
    width = max(x + c.shape[1] for x, c in zip(xs_at, covers, strict=True))
    rows = int(np.ceil(max(t + c.shape[0] for t, c in zip(tops, covers, strict=True)) - top))
    page = np.zeros((rows + 2 * margin, width + 2 * margin), np.float32)
    owner = np.zeros(page.shape, np.uint8)
    for k, (x, t, c) in enumerate(zip(xs_at, tops, covers, strict=True)):
        y0, x0 = margin + int(round(t - top)), margin + x
        region = page[y0 : y0 + c.shape[0], x0 : x0 + c.shape[1]]
        c = c[: region.shape[0], : region.shape[1]]
        owner[y0 : y0 + c.shape[0], x0 : x0 + c.shape[1]][c > np.maximum(region, 0.1)] = k + 1
        np.maximum(region, c, out=region)
    return (255 * (1 - page)).round().astype(np.uint8)[..., None], owner


def labels_of(lat: sg.Lattice, owner: np.ndarray) -> dict[tuple[int, int], int]:
    """Each candidate of ``lat``: 1 whole digit, 0 garbage, -1 in between; ``owner``: which
    digit (k + 1) owns each pixel of the page, at work scale."""
    if lat.labels is None:
        return {}
    ink = np.bincount(owner[lat.labels > 0], minlength=256).astype(np.float64)
    margin = sg.Costs().attach * lat.height
    out = {}
    for i, j in lat.digits:
        keep, (y0, x0) = sg.group_mask(lat.labels, lat.prims[i:j], lat.specks, margin)
        cnt = np.bincount(owner[y0 : y0 + keep.shape[0], x0 : x0 + keep.shape[1]][keep],
                          minlength=256).astype(np.float64)  # fmt: skip
        cnt[0] = 0  # paper: specks, blur
        d = int(cnt.argmax())
        precision, recall = cnt[d] / max(cnt.sum(), 1.0), cnt[d] / max(ink[d], 1.0)
        if precision >= WHOLE and recall >= WHOLE:
            out[(i, j)] = 1
        elif precision < LOOSE or recall < LOOSE:
            out[(i, j)] = 0
        else:
            out[(i, j)] = -1
    return out


def uniform(x28: np.ndarray) -> np.ndarray:
    """Probabilities for the lattice when only its candidates are wanted."""
    return np.full((len(x28), 10), 0.1, np.float32)


def candidates(images: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The lattice's candidates on ``n`` clean numbers of 2-6 digits drawn from ``images``
    (MNIST 28x28s): (M, 28, 28) uint8 and (M,) labels, 1 whole, 0 garbage (the in-between
    ones left out)."""
    rng = np.random.default_rng(seed)
    out_x, out_y = [], []
    for _ in range(n):
        idx = rng.integers(0, len(images), int(rng.integers(2, 7)))
        page, owner = clean_number([images[k] for k in idx], rng)
        m = ink_map(page)
        lat = sg.lattice(m, uniform, sg.Costs()) if m is not None else None
        if m is None or lat is None:
            continue
        h, w = m.mask.shape
        owner = cv2.resize(owner, (w, h), interpolation=cv2.INTER_NEAREST)
        for g, label in labels_of(lat, owner).items():
            if label >= 0:
                out_x.append((lat.digits[g].item.image * 255).round().astype(np.uint8))
                out_y.append(label)
    return np.stack(out_x).reshape(-1, 28, 28), np.array(out_y, np.int8)


class VerifierNet(nn.Module):
    """The verifier as torch layers, named as :func:`~mnistkit.infer.verifier.shapes`."""

    def __init__(self, widths: tuple[int, int, int] = WIDTHS) -> None:
        super().__init__()
        c1, c2, fc = widths
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc1 = nn.Linear(c2 * 7 * 7, fc)
        self.fc2 = nn.Linear(fc, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 1, 28, 28) -> (N,)
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)  # (N, c1, 14, 14)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)  # (N, c2, 7, 7)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))[:, 0]


def fit_verifier(
    images: np.ndarray, labels: np.ndarray, epochs: int = 4, seed: int = 0,
    batch_size: int = 64, lr: float = 5e-3,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Train the verifier on 28x28s (uint8 or float in [0, 1]) labelled 1 whole, 0 garbage,
    on one thread. On the 2-core EPYC two threads are faster only on an idle machine (20,000
    examples, an epoch: 6.4 s on one, 4.6 s on two); shared, they spun (the first, smaller
    verifier: 15,000 examples x 4 epochs in 12.5 s on one thread, 96 s on two).

    Returns:
        its weights, name -> float32 array (:class:`~mnistkit.infer.verifier.Verifier`'s).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(images, labels, epochs, seed, batch_size, lr)
    finally:
        torch.set_num_threads(threads)


def _fit(
    images: np.ndarray, labels: np.ndarray, epochs: int, seed: int, batch_size: int, lr: float
) -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if x.max() > 1:
        x = x / 255
    x = x.reshape(-1, 1, 28, 28)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    net = VerifierNet()
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for k in range(0, len(x), batch_size):
            idx = order[k : k + batch_size]
            xb = x[idx]
            # A digit's stroke widths and its place in the box vary: shifts of a pixel.
            dy, dx = torch.randint(-1, 2, (2,), generator=g).tolist()
            xb = torch.roll(xb, (dy, dx), dims=(2, 3))
            loss = nn.functional.binary_cross_entropy_with_logits(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    state = net.state_dict()
    want = shapes(*WIDTHS)
    return {k: state[k].detach().numpy().astype(np.float32).reshape(want[k]) for k in want}


def train_verifier(
    images: np.ndarray, seed: int = 0, numbers: int | None = None, epochs: int | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:  # fmt: skip
    """The verifier trained on the candidates of ``numbers`` (default ``NUMBERS``) clean
    numbers written with ``images`` (MNIST training digits, (N, 28, 28)) for ``epochs``
    (default ``EPOCHS``): its weights and what it was trained on (the file's metadata)."""
    numbers, epochs = numbers or NUMBERS, epochs or EPOCHS
    if log:
        log(f"segmentation verifier: cutting {numbers} numbers written with the training digits")
    t0 = time.perf_counter()
    x, y = candidates(np.asarray(images).reshape(-1, 28, 28), numbers, seed=seed)
    t1 = time.perf_counter()
    weights = fit_verifier(x, y, epochs=epochs, seed=seed)
    t2 = time.perf_counter()
    info = {"numbers": str(numbers), "candidates": str(len(y)), "whole": str(int(y.sum())),
            "epochs": str(epochs), "seed": str(seed), "digits": str(len(images)),
            "seconds": f"{t2 - t0:.1f}"}  # fmt: skip
    if log:
        log(f"segmentation verifier: {len(y)} candidates of {numbers} numbers in "
            f"{t1 - t0:.1f} s, trained in {t2 - t1:.1f} s")  # fmt: skip
    return weights, info


def save_verifier(
    run_dir: str | os.PathLike[str], weights: dict[str, np.ndarray], info: dict[str, str]
) -> Path:
    """Write ``verifier.safetensors`` in the run directory, atomically."""
    from safetensors.numpy import save

    path = Path(run_dir) / VERIFIER_FILE
    write_atomic(path, save({k: np.ascontiguousarray(v) for k, v in weights.items()}, info))
    return path


def add_verifier(
    run_dir: str | os.PathLike[str], images: np.ndarray, seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> Path:  # fmt: skip
    """Train a verifier for a run made before runs had one, and write it there.

    Args:
        run_dir: a finished run of MNIST digits.
        images: the MNIST training digits the run was trained on (its ``n_train`` first).
    """
    weights, info = train_verifier(images, seed=seed, log=log)
    return save_verifier(run_dir, weights, info)
