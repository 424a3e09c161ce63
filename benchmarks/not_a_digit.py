"""Where should the not-a-digit rule put its confidence threshold? (``predict.MIN_CONFIDENCE``)

    .venv/bin/python benchmarks/not_a_digit.py RUN_DIR [--n 2000] [--seed 0]

For each threshold on the top (calibrated) probability, the share of images flagged in:

- ``digits``: the run's held-out training images (its validation or calibration split, which it
  never trained on; never the test split), 28x28 as MNIST stores them;
- ``photos``: the same digits rendered as photos (``benchmarks/digit_photos.py``) and preprocessed,
  as a person's images reach the model;
- ``letters``: printed letters and symbols that are not digit look-alikes (DejaVu and
  Liberation fonts, sizes, slants), preprocessed;
- ``scribbles``: random strokes drawn as on the drawing page (white on a black 280x280 canvas),
  preprocessed;

and, for the held-out digits, the accuracy of those flagged and of those kept. The same table
for the model's own probabilities (``T = 1``) shows what calibration changed. Images the
blank and ink-coverage rules already flag are counted as flagged.

``MIN_CONFIDENCE`` is the largest threshold that flags no more of the held-out digits and their
photos than the rule before calibration (0.5 on the model's own probabilities) did.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import digit_photos as handwriting  # benchmarks/digit_photos.py, run from this folder
import numpy as np
from PIL import Image, ImageDraw, ImageFont

import mnistkit
from mnistkit.calibration import rescale
from mnistkit.infer.predict import MAX_INK, Classifier
from mnistkit.rundir import read_config

THRESHOLDS = (0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
FONTS = [f"/usr/share/fonts/truetype/{name}.ttf" for name in (
    "dejavu/DejaVuSans", "dejavu/DejaVuSerif", "dejavu/DejaVuSans-Bold", "dejavu/DejaVuSansMono",
    "dejavu/DejaVuSansCondensed-Oblique", "liberation/LiberationSans-Regular",
    "liberation/LiberationSerif-Italic", "liberation/LiberationMono-Bold",
)]  # fmt: skip
# Letters and symbols a digit model has no business reading: those that look like a digit
# (O o D Q I l i j L T Z z S s B b G g q y A) are left out.
GLYPHS = "CEFHKMNPRUVWXYacefhkmnprtuvwx#%&@?!+=*$"


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def letters(n: int, rng: np.random.Generator) -> list[bytes]:
    """Black glyphs on white, 200x200, at a random size, place and slant."""
    fonts = [f for f in FONTS if Path(f).is_file()]
    out = []
    for _ in range(n):
        im = Image.new("L", (200, 200), 255)
        font = ImageFont.truetype(str(rng.choice(fonts)), int(rng.integers(60, 140)))
        ImageDraw.Draw(im).text((100, 100), str(rng.choice(list(GLYPHS))), fill=0, font=font,
                                anchor="mm")  # fmt: skip
        out.append(png(im.rotate(float(rng.uniform(-15, 15)), fillcolor=255)))
    return out


def scribbles(n: int, rng: np.random.Generator) -> list[bytes]:
    """2-4 random strokes of 3-6 points each, white, 10-22 px wide, on a black canvas."""
    out = []
    for _ in range(n):
        im = Image.new("L", (280, 280), 0)
        draw = ImageDraw.Draw(im)
        width = int(rng.integers(10, 23))
        for _ in range(int(rng.integers(2, 5))):
            points = [tuple(p) for p in rng.uniform(30, 250, size=(int(rng.integers(3, 7)), 2))]
            draw.line(points, fill=255, width=width, joint="curve")
        out.append(png(im))
    return out


def flagged(probs: np.ndarray, other: np.ndarray, t: float) -> np.ndarray:
    return other | (probs.max(axis=1) < t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", nargs="?", default="runs/fast")
    ap.add_argument("--n", type=int, default=2000, help="images per set (digits: at most held out)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cfg = read_config(args.run_dir)
    t_run = float(cfg.get("temperature", 1.0))
    clf = Classifier.load(args.run_dir)
    (x, y), _ = mnistkit.load_data(cfg["dataset"])
    held = np.arange(cfg["n_train"], len(y))[: args.n]
    if not len(held):
        raise SystemExit(f"{args.run_dir} held out no training images: nothing to measure on.")
    rng = np.random.default_rng(args.seed)
    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (probabilities, other flags)

    p = clf.predict_arrays(x[held]).astype(np.float64)
    sets["digits"] = (p, (x[held].reshape(len(held), -1) == 0).all(1))
    photos = handwriting.make_set(x, y, len(held), seed=args.seed, start=int(held[0]))
    for name, images in (("photos", [s.data for s in photos]), ("letters", letters(args.n, rng)),
                         ("scribbles", scribbles(args.n, rng))):  # fmt: skip
        items = [clf.preprocess(im) for im in images]
        probs = clf.predict_arrays(np.stack([it.image for it in items])).astype(np.float64)
        other = np.array([it.blank or float(it.image.mean()) > MAX_INK for it in items])
        sets[name] = (probs, other)
    labels = {"digits": y[held], "photos": np.array([s.label for s in photos])}

    print(f"run {args.run_dir} ({cfg['recipe']}, T = {t_run:.4g}); {len(held)} held-out training "
          f"digits (images {held[0]}..{held[-1]}), {args.n} letters, {args.n} scribbles")  # fmt: skip
    for title, factor in (
        (f"calibrated (T = {t_run:.3g})", 1.0),
        ("the model's own (T = 1)", t_run),
    ):
        print(f"\nshare flagged as not a digit, on {title} probabilities")
        print(f"{'threshold':>9}  {'digits':>7}  {'acc flagged':>11}  {'acc kept':>8}  "
              f"{'photos':>7}  {'letters':>7}  {'scribbles':>9}")  # fmt: skip
        for t in THRESHOLDS:
            row, accs = [], []
            for name, (probs, other) in sets.items():
                pr = rescale(probs, factor) if factor != 1.0 else probs
                f = flagged(pr, other, t)
                row.append(100 * f.mean())
                if name == "digits":
                    right = pr.argmax(1) == labels[name]
                    accs = [100 * right[f].mean() if f.any() else float("nan"),
                            100 * right[~f].mean()]  # fmt: skip
            print(f"{t:>9.2f}  {row[0]:>6.2f}%  {accs[0]:>10.1f}%  {accs[1]:>7.2f}%  "
                  f"{row[1]:>6.2f}%  {row[2]:>6.2f}%  {row[3]:>8.2f}%")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
