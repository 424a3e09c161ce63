"""Accuracy on realistic images of MNIST test digits: naive resizing vs MNIST-style preprocessing.

    .venv/bin/python benchmarks/handwriting.py RUN_DIR [--n 2000] [--seed 0] [--backend onnx]

Renders MNIST test digits ``start .. start+n-1`` as photos of ink on paper
(:mod:`mnistkit.handwriting`: size, place, pen width, ink and paper colours, uneven light, a
strip of table, specks, blur, noise, JPEG/PNG), then classifies them three ways with the same
model: the MNIST digits themselves (the ceiling), the photos through ``naive28`` (resize the
whole image to 28x28, invert a light page) and the photos through ``mnistkit.preprocess``.
``--save DIR`` writes the photos, and ``DIR-errors.png`` a grid of what the model saw
where it was wrong; ``--calibrate`` prints the
MNIST stroke-width percentiles that ``preprocess.STROKE_*`` hold.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

import mnistkit
from mnistkit import handwriting
from mnistkit.infer import imageops
from mnistkit.infer import preprocess as pp
from mnistkit.infer.predict import Classifier


def calibrate(x: np.ndarray) -> None:
    widths = []
    for im in x.astype(np.float32) / 255:
        ys, xs = np.nonzero(im > 0)
        t = im[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        k = pp.BOX / max(t.shape)
        widths.append(
            pp.stroke_width(imageops.resize(t, round(t.shape[1] * k), round(t.shape[0] * k)))
        )
    p10, p50, p90 = np.percentile(widths, [10, 50, 90])
    print(
        f"MNIST stroke width at {pp.BOX} px high, {len(x)} test digits: p10 {p10:.2f}, median {p50:.2f}, p90 {p90:.2f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("run_dir", nargs="?")
    ap.add_argument("--n", type=int, default=2000, help="how many test digits (default 2000)")
    ap.add_argument("--start", type=int, default=0, help="first test index")
    ap.add_argument("--seed", type=int, default=0, help="the set's seed (default 0)")
    ap.add_argument("--backend", default="onnx", choices=["torch", "onnx"])
    ap.add_argument("--save", metavar="DIR", help="write the rendered images and a grid")
    ap.add_argument("--calibrate", action="store_true", help="print MNIST stroke-width percentiles")
    args = ap.parse_args()
    (_, _), (x, y) = mnistkit.load_data()
    if args.calibrate:
        calibrate(x)
        if not args.run_dir:
            return 0
    if not args.run_dir:
        ap.error("RUN_DIR is required")
    if args.backend == "onnx" and not (Path(args.run_dir) / "model.onnx").exists():
        from mnistkit.infer.export import to_onnx

        to_onnx(args.run_dir)
    clf = Classifier.load(args.run_dir, backend=args.backend)
    sel = slice(args.start, args.start + args.n)
    t0 = time.perf_counter()
    samples = handwriting.make_set(x, y, args.n, seed=args.seed, start=args.start)
    t_gen = time.perf_counter() - t0
    labels = np.array([s.label for s in samples])
    t0 = time.perf_counter()
    preds = clf.predict_batch([s.data for s in samples])
    t_ours = time.perf_counter() - t0
    ours = np.array([p.label for p in preds])
    naive = clf.predict_arrays(np.stack([handwriting.naive28(s.data) for s in samples])).argmax(1)
    ceiling = clf.predict_arrays(x[sel]).argmax(1)
    n = len(samples)
    info = clf.info
    print(
        f"model    {args.run_dir} ({info.get('recipe')}, {args.backend}); MNIST test accuracy (10,000): {info.get('test_accuracy', float('nan')):.2%}"
    )
    print(
        f"set      MNIST test digits {args.start}..{args.start + n - 1} rendered with seed {args.seed} ({t_gen / n * 1e3:.0f} ms each)"
    )
    print(
        f"machine  {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print()
    print(f"{'input':<44} {'accuracy':>9}")
    print(f"{'the MNIST digits themselves (same indices)':<44} {(ceiling == y[sel]).mean():>9.2%}")
    print(f"{'photos, naive (resize whole image to 28x28)':<44} {(naive == labels).mean():>9.2%}")
    print(f"{'photos, mnistkit.preprocess':<44} {(ours == labels).mean():>9.2%}")
    flagged = sum(p.not_digit is not None for p in preds)
    print(
        f"\npreprocess + predict: {t_ours / n * 1e3:.1f} ms per image; flagged not-a-digit: {flagged}"
    )
    wrong = np.nonzero(ours != labels)[0]
    by_pen: dict[str, list[int]] = {}
    for s, ok in zip(samples, ours == labels, strict=True):
        by_pen.setdefault(str(s.params["pen"]), []).append(int(ok))
    print(
        "by pen:  "
        + ", ".join(f"{k} {np.mean(v):.1%} (n={len(v)})" for k, v in sorted(by_pen.items()))
    )
    if args.save:
        save(Path(args.save), samples, preds, x[sel], wrong)
    return 0


def save(folder: Path, samples, preds, originals, wrong) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for s in samples:
        ext = "jpg" if s.data[:2] == b"\xff\xd8" else "png"
        (folder / f"{s.index:05d}_label{s.label}.{ext}").write_bytes(s.data)
    rows = [np.concatenate([originals[i] / 255, preds[i].input28], axis=1) for i in wrong[:40]]
    if rows:
        grid = np.concatenate(rows, axis=0)
        # Beside the folder, not in it, so `mnistkit predict DIR` sees only the photos.
        grid_path = folder.with_name(folder.name + "-errors.png")
        Image.fromarray((grid * 255).astype(np.uint8)).save(grid_path)
        print(f"wrote {grid_path}: each wrong photo's MNIST original beside what the model saw")
    print(f"wrote {len(samples)} photos of MNIST test digits to {folder}")


if __name__ == "__main__":
    sys.exit(main())
