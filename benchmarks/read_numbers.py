"""Reading photographed numbers: exact numbers, digits in place, split and merge errors.

    python benchmarks/read_numbers.py RUN_DIR [--n 1000] [--split test|train] [--seed 0]
    python benchmarks/read_numbers.py RUN_DIR --tune [--n 600]      # training digits only

The numbers are :mod:`number_photos`: 2-6 MNIST digits in a row at natural spacing on a
sloping line, photographed. Report on ``--split test``; ``--tune`` searches the segmentation
costs (:class:`mnistkit.infer.segment.Costs`) on numbers made from *training* digits (the
model read each candidate digit once; each setting of the costs is a new best path).

Figures: exact (the whole number right), digits (digits right in place, over all digits:
an alignment by edit distance), splits (more digits read than written), merges (fewer),
and the same MNIST digits read as 28x28 images (the ceiling). ``--baseline`` also reads
the photos the way many public projects do (connected pieces, pieces overlapping in x
merged, each crop through ``mnistkit.preprocess``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import sys
import time

import cv2
import number_photos
import numpy as np

import mnistkit
from mnistkit.infer import segment as sg
from mnistkit.infer.images import load_scaled
from mnistkit.infer.inkmap import ink_map
from mnistkit.infer.predict import Classifier
from mnistkit.infer.preprocess import DECODE


def aligned(truth: str, got: str) -> int:
    """Digits of ``truth`` read right in place: matches of an edit-distance alignment."""
    n, m = len(truth), len(got)
    d = np.zeros((n + 1, m + 1), np.int32)
    d[:, 0], d[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i, j in itertools.product(range(1, n + 1), range(1, m + 1)):
        d[i, j] = min(
            d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (truth[i - 1] != got[j - 1])
        )
    i, j, hits = n, m, 0
    while i > 0 and j > 0:
        if d[i, j] == d[i - 1, j - 1] + (truth[i - 1] != got[j - 1]):
            hits += truth[i - 1] == got[j - 1]
            i, j = i - 1, j - 1
        elif d[i, j] == d[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    return hits


def figures(truths: list[str], reads: list[str]) -> dict[str, float]:
    n = len(truths)
    digits = sum(len(t) for t in truths)
    return {
        "numbers": n,
        "exact": sum(t == r for t, r in zip(truths, reads, strict=True)) / n,
        "digits": sum(aligned(t, r) for t, r in zip(truths, reads, strict=True)) / digits,
        "splits": sum(len(r) > len(t) for t, r in zip(truths, reads, strict=True)) / n,
        "merges": sum(len(r) < len(t) for t, r in zip(truths, reads, strict=True)) / n,
        "misread": sum(len(r) == len(t) and r != t for t, r in zip(truths, reads, strict=True)) / n,
    }


def baseline(clf: Classifier, data: bytes) -> str:
    """The contour-finder approach: Otsu threshold, connected pieces, pieces overlapping in x
    merged, each crop read through ``mnistkit.preprocess``."""
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    _, bw = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    if np.mean(bw) > 127:  # light ink on a dark board
        bw = 255 - bw
    n, _, stats, _ = cv2.connectedComponentsWithStats(bw)
    boxes = sorted(
        [list(s[:4]) for s in stats[1:] if s[4] >= 0.002 * grey.size], key=lambda b: b[0]
    )
    merged: list[list[int]] = []
    for x, y, w, h in boxes:
        if merged and x < merged[-1][0] + merged[-1][2]:
            m = merged[-1]
            x1, y1 = max(m[0] + m[2], x + w), max(m[1] + m[3], y + h)
            m[0], m[1] = min(m[0], x), min(m[1], y)
            m[2], m[3] = x1 - m[0], y1 - m[1]
        else:
            merged.append([x, y, w, h])
    crops = [grey[max(0, y - 4) : y + h + 4, max(0, x - 4) : x + w + 4] for x, y, w, h in merged]
    preds = clf.predict_preprocessed([clf.preprocess(c[..., None]) for c in crops if c.size])
    return "".join(str(p.label) for p in preds if p.label is not None)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=1000, help="numbers (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="test", choices=["test", "train"])
    ap.add_argument("--tune", action="store_true", help="search the costs on training digits")
    ap.add_argument("--baseline", action="store_true", help="also read the naive way")
    ap.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    args = ap.parse_args()
    split = "train" if args.tune else args.split
    (xtr, ytr), (xte, yte) = mnistkit.load_data()
    x, y = (xte, yte) if split == "test" else (xtr, ytr)
    clf = Classifier.load(args.run_dir, backend=args.backend)
    print(f"model    {args.run_dir} ({clf.info.get('recipe')}, {args.backend}); "
          f"MNIST test accuracy {clf.info.get('test_accuracy', float('nan')):.2%}")  # fmt: skip
    print(f"machine  {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")  # fmt: skip
    t0 = time.perf_counter()
    samples = number_photos.make_numbers(x, y, args.n, seed=args.seed)
    lengths = np.bincount([len(s.number) for s in samples], minlength=7)[2:]
    print(f"set      {args.n} numbers of MNIST {split} digits (2-6 digits: "
          f"{', '.join(str(int(c)) for c in lengths)}), seed {args.seed}, "
          f"rendered in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    truths = [s.number for s in samples]
    if args.tune:
        return tune(clf, samples)
    t0 = time.perf_counter()
    reads = [clf.read(s.data).number for s in samples]
    ms = (time.perf_counter() - t0) / len(samples) * 1e3
    ceiling = ["".join(str(int(k)) for k in clf.predict_arrays(x[s.indices]).argmax(1))
               for s in samples]  # fmt: skip
    rows = [("the MNIST digits themselves, 28x28", figures(truths, ceiling))]
    if args.baseline:
        rows.append(("photos, pieces merged in x (baseline)",
                     figures(truths, [baseline(clf, s.data) for s in samples])))  # fmt: skip
    rows.append(("photos, Classifier.read", figures(truths, reads)))
    print(f"\n{'input':<40} {'exact':>7} {'digits':>7} {'splits':>7} {'merges':>7} {'misread':>8}")
    for name, f in rows:
        print(f"{name:<40} {f['exact']:>7.2%} {f['digits']:>7.2%} {f['splits']:>7.2%} "
              f"{f['merges']:>7.2%} {f['misread']:>8.2%}")  # fmt: skip
    print(f"\nread: {ms:.0f} ms per number (decoding included, {len(samples)} numbers)")
    by_len = {}
    for t, r in zip(truths, reads, strict=True):
        by_len.setdefault(len(t), []).append(t == r)
    print(
        "exact by length: " + ", ".join(f"{k}: {np.mean(v):.1%}" for k, v in sorted(by_len.items()))
    )
    return 0


def tune(clf: Classifier, samples: list) -> int:
    """Grid search of the DP costs on cached candidate digits (geometry at the defaults)."""
    base = sg.Costs()
    lattices = []
    for s in samples:
        pixels, scale = load_scaled(s.data, max_side=DECODE)
        m = ink_map(pixels, scale)
        lat = sg.lattice(m, clf.predict_arrays, base) if m is not None else None
        lattices.append(lat or sg.Lattice([], 0.0, {}))
    truths = [s.number for s in samples]

    def exact(costs: sg.Costs) -> float:
        reads = ["".join(str(int(lat.digits[g].probs.argmax())) for g in sg.best_path(lat, costs))
                 for lat in lattices]  # fmt: skip
        return figures(truths, reads)["exact"]

    grid = {"cut": [0.25, 0.5, 1.0], "join": [0.5, 1.5, 3.0], "short": [4.0, 20.0],
            "wide": [2.0, 4.0, 8.0], "digit": [0.0, 0.5], "aspect": [0.0, 0.25]}  # fmt: skip
    best = (exact(base), base)
    print(f"defaults: exact {best[0]:.2%}")
    for values in itertools.product(*grid.values()):
        costs = dataclasses.replace(base, **dict(zip(grid, values, strict=True)))
        e = exact(costs)
        if e > best[0]:
            best = (e, costs)
            print(f"exact {e:.2%}: {dict(zip(grid, values, strict=True))}", flush=True)
    print(f"best: exact {best[0]:.2%} with {best[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
