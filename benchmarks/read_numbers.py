"""Reading photographed numbers: exact numbers, digits in place, split and merge errors.

    python benchmarks/read_numbers.py RUN_DIR [--n 1000] [--split test|train] [--seed 0]
    python benchmarks/read_numbers.py RUN_DIR --split train --start 58000  # digits it never saw
    python benchmarks/read_numbers.py RUN_DIR --tune [--n 600] [--n-single 600]  # train digits

The numbers are :mod:`number_photos`: 2-6 MNIST digits in a row at natural spacing on a
sloping line, photographed. Report on ``--split test``; ``--tune`` searches the segmentation
costs (:class:`mnistkit.infer.segment.Costs`) and the one-digit priors
(:class:`mnistkit.infer.read.OneDigit`) on numbers and single-digit photos made from
*training* digits (the model read each candidate digit once; each setting is a new best path).

Figures: exact (the whole number right), digits (digits right in place, over all digits:
an alignment by edit distance), splits (more digits read than written), merges (fewer),
and the same MNIST digits read as 28x28 images (the ceiling). ``--baseline`` also reads
the photos the way many public projects do (connected pieces, pieces overlapping in x
merged, each crop through ``mnistkit.preprocess``). ``--alone`` also photographs each digit
alone in its place in the same photo and reads it through ``mnistkit.preprocess``: what a
segmenter that loses nothing would give (the photos' ceiling; rendering takes several times as long).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import sys
import time
from dataclasses import dataclass

import cv2
import digit_kinds
import digit_photos
import number_photos
import numpy as np

import mnistkit
from mnistkit.infer import read as rd
from mnistkit.infer import segment as sg
from mnistkit.infer.images import load_scaled
from mnistkit.infer.inkmap import InkMap, ink_map
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
    ap.add_argument("--start", type=int, default=0,
                    help="--split train: digits from this index on (default 0; 58000: "
                         "fast's hold-out; a run of benchmarks/fewer_digits.py: its --digits)")  # fmt: skip
    ap.add_argument("--tune", action="store_true", help="search the costs on training digits")
    ap.add_argument("--n-single", type=int, default=600,
                    help="--tune: single-digit photos beside the numbers (default 600)")  # fmt: skip
    ap.add_argument("--baseline", action="store_true", help="also read the naive way")
    ap.add_argument("--alone", action="store_true",
                    help="also read each digit photographed alone (a perfect segmenter)")  # fmt: skip
    ap.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    args = ap.parse_args()
    split = "train" if args.tune else args.split
    (xtr, ytr), (xte, yte) = mnistkit.load_data()
    x, y = (xte, yte) if split == "test" else (xtr[args.start :], ytr[args.start :])
    clf = Classifier.load(args.run_dir, backend=args.backend)
    print(f"model    {args.run_dir} ({clf.info.get('recipe')}, {args.backend}); "
          f"MNIST test accuracy {clf.info.get('test_accuracy', float('nan')):.2%}")  # fmt: skip
    print(f"machine  {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")  # fmt: skip
    t0 = time.perf_counter()
    samples = number_photos.make_numbers(x, y, args.n, seed=args.seed, alone=args.alone)
    lengths = np.bincount([len(s.number) for s in samples], minlength=7)[2:]
    first = f" from {args.start}" if split == "train" and args.start else ""
    print(f"set      {args.n} numbers of MNIST {split} digits{first} (2-6 digits: "
          f"{', '.join(str(int(c)) for c in lengths)}), seed {args.seed}, "
          f"rendered in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    truths = [s.number for s in samples]
    if args.tune:
        return tune(clf, samples, x, y, args.n_single)
    t0 = time.perf_counter()
    reads = [clf.read(s.data).number for s in samples]
    ms = (time.perf_counter() - t0) / len(samples) * 1e3
    ceiling = ["".join(str(int(k)) for k in clf.predict_arrays(x[s.indices]).argmax(1))
               for s in samples]  # fmt: skip
    rows = [("the MNIST digits themselves, 28x28", figures(truths, ceiling))]
    if args.baseline:
        rows.append(("photos, pieces merged in x (baseline)",
                     figures(truths, [baseline(clf, s.data) for s in samples])))  # fmt: skip
    if args.alone:
        alone = ["".join("" if p.label is None else str(p.label) for p in
                         clf.predict_preprocessed([clf.preprocess(a) for a in s.alone]))
                 for s in samples]  # fmt: skip
        rows.append(("photos, each digit alone (preprocess)", figures(truths, alone)))
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


@dataclass
class Cached:
    """What a tuning step needs of one image: the one digit found alone (its label and top
    probability, how alone it looks) and every candidate digit, read once."""

    truth: str
    label: str
    p: float
    seen: rd.Look | None
    lat: sg.Lattice
    one: np.ndarray | None = None  # the one digit's 28x28
    verified: float = 0.0  # the verifier's log-odds of one whole digit for ``one`` (0: none)


def cache(clf: Classifier, data: bytes, truth: str) -> Cached:
    pixels, scale = load_scaled(data, max_side=DECODE)
    return cache_map(clf, ink_map(pixels, scale), truth)


def cache_map(clf: Classifier, m: InkMap | None, truth: str) -> Cached:
    found = rd.one_digit_of(m, clf.predict_arrays) if m is not None else None
    if m is None or found is None:
        return Cached(truth, "", 0.0, None, sg.Lattice([], 0.0, {}))
    item, probs, seen = found
    lat = sg.lattice(m, clf.predict_arrays, sg.Costs()) or sg.Lattice([], 0.0, {})
    return Cached(truth, str(int(probs[0].argmax())), float(probs[0].max()), seen, lat, item.image)


def replay(c: Cached, costs: sg.Costs, priors: rd.OneDigit) -> str:
    """What ``read_digits`` reads with these costs and priors (the lattice's geometry fixed)."""
    if c.seen is None or (c.seen.alone(priors) and c.verified >= priors.whole):
        return c.label
    path, score = sg.best_reading(c.lat, costs)
    whole = sg.group_cost(c.lat.prims, c.lat.height, costs) if c.lat.prims else 0.0
    if len(path) <= 1 or score < c.seen.single(c.p, whole, costs, priors, c.verified):
        return c.label
    return "".join(str(int(c.lat.digits[g].probs.argmax())) for g in path)


# Searched, one at a time, each times 0.5, 0.8, 1.25 and 2, for as long as one gains.
SEARCH = {"costs": ["confidence", "entropy", "cut", "drop", "short", "snug", "wide", "join",
                    "join_gap"],
          "priors": ["ink", "z", "gap", "prior", "lone_prior"]}  # fmt: skip
SINGLE_KINDS = ("ruled", "shadow", "pencil", "lowres-12", "tight-4")


def single_photos(x: np.ndarray, y: np.ndarray, n_single: int) -> list[tuple[bytes, str]]:
    """Single-digit photos of training digits for tuning: ``n_single`` photos and a sixth as
    many of each of ``SINGLE_KINDS``, (encoded image, label)."""
    singles = [(s.data, str(s.label)) for s in digit_photos.make_set(x, y, n_single, start=1000)]
    for kind in SINGLE_KINDS:
        singles += [(s.data, str(s.label))
                    for s in digit_kinds.make_set(kind, x, y, n_single // 6, start=2000)]  # fmt: skip
    return singles


def tune(clf: Classifier, samples: list, x: np.ndarray, y: np.ndarray, n_single: int) -> int:
    """Coordinate search of the segmentation's costs and the one-digit priors on numbers and
    single digits made from training digits: the most numbers read exactly plus twice the
    single digits read right (a single digit must not be cut in two to read a pair)."""
    singles = single_photos(x, y, n_single)
    print(f"singles  {n_single} photos and {n_single // 6} each of {', '.join(SINGLE_KINDS)}, "
          "MNIST train digits")  # fmt: skip
    numbers = [cache(clf, s.data, s.number) for s in samples]
    ones = [cache(clf, data, label) for data, label in singles]
    search(numbers, ones, sg.Costs(), rd.OneDigit(), SEARCH)
    return 0


def search(
    numbers: list[Cached], ones: list[Cached], costs: sg.Costs, priors: rd.OneDigit,
    names: dict[str, list[str]],
) -> tuple[sg.Costs, rd.OneDigit]:  # fmt: skip
    """Coordinate search from ``costs`` and ``priors`` over ``names`` (see :func:`tune`)."""

    def measure(costs: sg.Costs, priors: rd.OneDigit) -> tuple[float, float, float]:
        a = float(np.mean([replay(c, costs, priors) == c.truth for c in numbers]))
        b = float(np.mean([replay(c, costs, priors) == c.truth for c in ones]))
        return a + 2 * b, a, b

    best = {"costs": costs, "priors": priors}
    score = measure(best["costs"], best["priors"])
    print(f"start: numbers exact {score[1]:.2%}, single digits {score[2]:.2%}")
    gained = True
    while gained:
        gained = False
        for part, fields in names.items():
            for name in fields:
                for f in (0.5, 0.8, 1.25, 2.0):
                    trial = dict(best)
                    trial[part] = dataclasses.replace(
                        best[part], **{name: getattr(best[part], name) * f}
                    )
                    s = measure(trial["costs"], trial["priors"])
                    if s[0] > score[0] + 1e-9:
                        best, score, gained = trial, s, True
                        print(f"{name} = {getattr(trial[part], name):.3g}: numbers exact "
                              f"{s[1]:.2%}, single digits {s[2]:.2%}", flush=True)  # fmt: skip
    print(f"best: {best['costs']}\n      {best['priors']}")
    return best["costs"], best["priors"]  # type: ignore[return-value]


if __name__ == "__main__":
    sys.exit(main())
