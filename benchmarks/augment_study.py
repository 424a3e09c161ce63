"""Does training on distorted digits make a model read people's images better?

Trains ``--recipe`` (default ``fast``) once per variant of its augmentation, then reads the
kinds of :mod:`digit_kinds` with each model through ``handwriting.py``, and prints one table:
MNIST test accuracy, then each kind's accuracy. Decide on ``--split train --start 58000``:
the recipe's calibration hold-out, training digits the model never trained on; report the
chosen variant on ``--split test``.

    python benchmarks/augment_study.py --out /tmp/aug [--recipe fast] [--variants none,affine]
        [--kinds tight-4,lowres-16,...] [--n-kind 500] [--split train --start 58000]

A benchmark, not a test: it trains for real (seconds per variant for ``fast``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import mnistkit
from mnistkit.recipes import get_recipe

HERE = Path(__file__).resolve().parent
# Mild distortions of what preprocessing leaves: a few degrees of slant, a tenth of scale,
# a pixel or two of offset (AugmentConfig's fields).
VARIANTS: dict[str, dict[str, float]] = {
    "none": {},
    "affine": {"degrees": 8.0, "scale": 0.1, "shear": 6.0, "translate": 1.5},
    "strong": {"degrees": 12.0, "scale": 0.15, "shear": 10.0, "translate": 2.0},
}
KINDS = "tight-4,lowres-16,lowres-12,ruled,form-cell,shadow,pencil,canvas"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the runs")
    ap.add_argument("--recipe", default="fast")
    ap.add_argument("--variants", default="none,affine", help=f"of {', '.join(VARIANTS)}")
    ap.add_argument("--epochs", type=int, help="override the recipe's epochs (all variants)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", default=KINDS)
    ap.add_argument("--n-kind", type=int, default=500)
    ap.add_argument("--split", default="train", choices=["train", "test"])
    ap.add_argument("--start", type=int, default=58000)
    args = ap.parse_args()
    out = Path(args.out)
    results = {}
    for name in args.variants.split(","):
        base = get_recipe(args.recipe)
        recipe = dataclasses.replace(base, augment=VARIANTS[name])
        run = out / f"{args.recipe}-{name}-e{args.epochs or base.epochs}-s{args.seed}"
        if not (run / "metrics.json").exists():
            mnistkit.train(recipe, out=run, epochs=args.epochs, seed=args.seed, quiet=True,
                           overwrite=True)  # fmt: skip
        metrics = json.loads((run / "metrics.json").read_text())
        report = run / f"kinds-{args.split}-{args.start}-{args.n_kind}.json"
        subprocess.run(
            [sys.executable, str(HERE / "handwriting.py"), str(run), "--n", "0", "--backend",
             "torch", "--kinds", args.kinds, "--n-kind", str(args.n_kind), "--split", args.split,
             "--start", str(args.start), "--json", str(report)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        sets = json.loads(report.read_text())["sets"]
        results[name] = (metrics, sets)
    kinds = args.kinds.split(",")
    print(f"{args.recipe}, seed {args.seed}; kinds: MNIST {args.split} digits {args.start}.."
          f"{args.start + args.n_kind - 1} ({args.n_kind} each)")  # fmt: skip
    print(f"{'variant':<8} {'fit s':>6} {'MNIST test':>10} " + " ".join(f"{k:>10}" for k in kinds))
    for name, (metrics, sets) in results.items():
        row = " ".join(f"{sets[k]['accuracy']:>10.2%}" for k in kinds)
        print(f"{name:<8} {metrics['train_seconds']:>6.1f} "
              f"{metrics['test_accuracy']:>10.2%} {row}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
