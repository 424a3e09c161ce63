"""A segmentation verifier: does a candidate digit's 28x28 hold one whole digit, or garbage?

    python benchmarks/verify_segments.py collect RUN_DIR --n 1500 --seed 2   # photos
    python benchmarks/verify_segments.py collect-clean RUN_DIR --n 1500 --seed 2
    python benchmarks/verify_segments.py cache RUN_DIR --n 400 --seed 1   # and --seed 3
    python benchmarks/verify_segments.py fit RUN_DIR --train clean-2 [--limit N] [--search]

Everything is written to and read from ``--out`` (default /work/aug-n20b; not committed).
``collect``: numbers of MNIST *training* digits (0..57,999: 58,000-59,999 are `fast`'s
calibration hold-out) photographed as :mod:`number_photos` does, their lattices (the same
candidates ``Classifier.read`` reads), each candidate labelled by the ink it holds
(``mnistkit.verifier_train.labels_of``: which digit owns each pixel is known from the
rendering). ``collect-clean``: the same from numbers written as clean ink, as the library
trains its verifier (``mnistkit.verifier_train.candidates``).
``cache``: numbers (``--seed``) and single-digit photos of training digits, cached as
``read_numbers.py --tune`` caches them, to replay the reading with the verifier's score.
``fit``: trains a verifier on the collected sets (or takes RUN_DIR's own), adds ``w`` x its
log-odds of "whole" (``--logp``: its log p) to each candidate's score in the path search and
to the one digit's, and prints the figures per ``w`` on the cached sets of seeds 1 and 3;
``--search`` then searches the costs from ``segment.VERIFIED`` on seed 1.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import sys
import time
from pathlib import Path

import cv2
import number_photos
import numpy as np
import read_numbers as rn

import mnistkit
from mnistkit.infer import read as rd
from mnistkit.infer import segment as sg
from mnistkit.infer.images import load_scaled
from mnistkit.infer.inkmap import ink_map
from mnistkit.infer.predict import Classifier
from mnistkit.infer.preprocess import DECODE
from mnistkit.infer.verifier import Verifier, load_verifier
from mnistkit.verifier_train import candidates, fit_verifier, labels_of

HOLD_OUT = 58_000  # training digits from here on are `fast`'s calibration hold-out


def collect(clf: Classifier, x: np.ndarray, y: np.ndarray, n: int, seed: int, out: Path) -> None:
    t0 = time.perf_counter()
    images, labels, number = [], [], []
    for k, s in enumerate(number_photos.make_numbers(x[:HOLD_OUT], y[:HOLD_OUT], n, seed=seed)):
        pixels, scale = load_scaled(s.data, max_side=DECODE)
        m = ink_map(pixels, scale)
        lat = sg.lattice(m, clf.predict_arrays, sg.Costs()) if m is not None else None
        if m is None or lat is None:
            continue
        h, w = m.mask.shape
        owner = cv2.resize(s.params["owner"], (w, h), interpolation=cv2.INTER_NEAREST)
        for g, label in labels_of(lat, owner).items():
            images.append((lat.digits[g].item.image * 255).round().astype(np.uint8))
            labels.append(label)
            number.append(k)
    lab = np.array(labels, np.int8)
    np.savez_compressed(out / f"train-{seed}.npz", images=np.stack(images), labels=lab,
                        number=np.array(number, np.int32))  # fmt: skip
    print(f"{n} numbers, seed {seed}: {len(lab)} candidates, whole {(lab == 1).sum()}, "
          f"garbage {(lab == 0).sum()}, in between {(lab == -1).sum()}; "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip


def cache(clf: Classifier, x: np.ndarray, y: np.ndarray, n: int, seed: int, out: Path) -> None:
    t0 = time.perf_counter()
    numbers = [rn.cache(clf, s.data, s.number)
               for s in number_photos.make_numbers(x, y, n, seed=seed)]  # fmt: skip
    ones = [rn.cache(clf, data, label) for data, label in rn.single_photos(x, y, 600)]
    with open(out / f"cache-{seed}.pkl", "wb") as f:
        pickle.dump({"numbers": numbers, "ones": ones}, f)
    print(f"cached {len(numbers)} numbers (seed {seed}) and {len(ones)} single digits in "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip


def collect_clean(x: np.ndarray, n: int, seed: int, out: Path) -> None:
    t0 = time.perf_counter()
    images, labels = candidates(x[:HOLD_OUT], n, seed=seed)
    np.savez_compressed(out / f"clean-{seed}.npz", images=images, labels=labels,
                        number=np.arange(len(labels), dtype=np.int32) // 40)  # fmt: skip
    print(f"{n} clean numbers, seed {seed}: {len(labels)} candidates, whole "
          f"{(labels == 1).sum()}, garbage {(labels == 0).sum()}; "
          f"{time.perf_counter() - t0:.1f} s")  # fmt: skip


def apply(ver: Verifier, cached: list[rn.Cached], logit: bool) -> None:
    """Put the verifier's log p(whole) (or its logit) into each candidate and each one digit
    found alone."""

    def said(x: np.ndarray) -> np.ndarray:
        z = ver(x).astype(np.float64)
        return z if logit else -np.logaddexp(0.0, -z)  # log-odds or log p

    for c in cached:
        if c.lat.digits:
            scores = said(np.stack([d.item.image for d in c.lat.digits.values()]))
            for d, v in zip(c.lat.digits.values(), scores, strict=True):
                d.whole = float(v)
        c.verified = float(said(c.one[None])[0]) if c.one is not None else 0.0


def report(name: str, sets: dict, costs: sg.Costs, priors: rd.OneDigit) -> None:
    for seed, got in sets.items():
        nums = [rn.replay(c, costs, priors) for c in got["numbers"]]
        f = rn.figures([c.truth for c in got["numbers"]], nums)
        ones = np.mean([rn.replay(c, costs, priors) == c.truth for c in got["ones"]])
        print(f"{name:<28} seed {seed}: exact {f['exact']:7.2%} digits {f['digits']:7.2%} "
              f"splits {f['splits']:6.2%} merges {f['merges']:6.2%} misread {f['misread']:6.2%}"
              f" | single digits {ones:7.2%}", flush=True)  # fmt: skip


def fit(
    run_dir: str, out: Path, train_seeds: list[str], epochs: int, limit: int, logit: bool, search: bool,
    tune_seed: int = 1, report_seed: int = 3,
) -> None:  # fmt: skip
    parts = [np.load(out / f"{s}.npz") for s in train_seeds]
    images = np.concatenate([p["images"] for p in parts])
    labels = np.concatenate([p["labels"] for p in parts])
    number = np.concatenate([p["number"] + 100_000 * k for k, p in enumerate(parts)])
    sure = labels >= 0
    val = sure & (number % 10 == 0)  # a tenth of the numbers, to see the net's own accuracy
    train = sure & ~val
    train[np.flatnonzero(train)[limit:]] = False
    t0 = time.perf_counter()
    loaded = load_verifier(run_dir)
    ver = loaded or Verifier(fit_verifier(images[train], labels[train], epochs=epochs))
    secs = time.perf_counter() - t0
    z = ver(images[val] / 255.0)
    acc = np.mean((z > 0) == (labels[val] == 1))
    whose = "the run's, " if loaded else ""
    print(f"verifier: {whose}{train.sum()} candidates ({labels[train].mean():.1%} whole), "
          f"{epochs} epochs in {secs:.0f} s; held-out candidates right {acc:.2%} "
          f"(all 'garbage': {1 - labels[val].mean():.2%})")  # fmt: skip
    sets = {}
    for seed in (tune_seed, report_seed):
        with open(out / f"cache-{seed}.pkl", "rb") as f:
            sets[seed] = pickle.load(f)
        apply(ver, sets[seed]["numbers"] + sets[seed]["ones"], logit)
    for w in (0.0, 0.2, 0.35, 0.5):
        report(f"verify {w}", sets, sg.Costs(verify=w), rd.OneDigit())
    if not search:
        return
    tune = {tune_seed: sets[tune_seed]}
    costs, priors = rn.search(tune[tune_seed]["numbers"], tune[tune_seed]["ones"],
                              sg.VERIFIED, rd.OneDigit(), SEARCH)  # fmt: skip
    report("searched", sets, costs, priors)


# Searched with the verifier's weight: the costs its score may replace.
SEARCH = {"costs": ["verify", "confidence", "entropy", "drop", "snug", "wide", "short"],
          "priors": ["prior", "lone_prior", "z", "ink"]}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("stage", choices=["collect", "collect-clean", "cache", "fit"])
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--out", default="/work/aug-n20b")
    ap.add_argument("--train", default="train-2", help="fit: collected sets, comma-separated")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--limit", type=int, default=10**9, help="fit: at most this many examples")
    ap.add_argument("--logp", action="store_true", help="fit: add log p, not the log-odds")
    ap.add_argument("--search", action="store_true", help="fit: then search the costs")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine  {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")  # fmt: skip
    (x, y), _ = mnistkit.load_data()
    clf = Classifier.load(args.run_dir)
    if args.stage == "collect":
        collect(clf, x, y, args.n, args.seed, out)
    elif args.stage == "collect-clean":
        collect_clean(x, args.n, args.seed, out)
    elif args.stage == "cache":
        cache(clf, x, y, args.n, args.seed, out)
    else:
        fit(
            args.run_dir,
            out,
            args.train.split(","),
            args.epochs,
            args.limit,
            not args.logp,
            args.search,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
