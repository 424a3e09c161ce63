"""`fast` against seed 003's own Keras program, in one run on one machine: both fit times and
the ratio.

TensorFlow is never a mnistkit dependency: the Keras program runs in a Python that has it
(a separate venv), reading the same verified IDX files from mnistkit's cache:

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu
    python benchmarks/fast_vs_keras.py --keras-python /tmp/tfvenv/bin/python --seeds 5

Order: the Keras program, then `fast` over the seeds, then the Keras program again, so that a
machine whose speed drifts shows it (both Keras fits are printed; the ratio uses their mean).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from mnistkit import data
from mnistkit.bench.train import bench_train, format_train

KERAS = Path(__file__).with_name("keras_seeds.py")


def keras_fit(python: str, raw_dir: Path, model: str = "convnet") -> dict:
    """One fit of a seed's Keras program in ``python``: {"test_accuracy", "fit_seconds", ...}."""
    out = subprocess.run([python, str(KERAS), str(raw_dir), model, "--json"], check=True,
                         capture_output=True, text=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keras-python", required=True, help="a Python with TensorFlow and Keras")
    ap.add_argument("--recipe", default="fast")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, help="CPU threads for PyTorch (default PyTorch's)")
    ap.add_argument("--cache-dir", help="mnistkit's cache root (default the usual one)")
    args = ap.parse_args()

    raw_dir = data.load("mnist", cache_dir=args.cache_dir, log=lambda m: None).cache_path
    keras = [keras_fit(args.keras_python, raw_dir)]
    print(f"seed 003 Keras program ({keras[0]['versions']}): test {100 * keras[0]['test_accuracy']:.2f} %"
          f"  fit {keras[0]['fit_seconds']:.1f} s", flush=True)  # fmt: skip
    ours = bench_train(args.recipe, seeds=args.seeds, threads=args.threads,
                       cache_dir=args.cache_dir, log=lambda m: print(m, flush=True))  # fmt: skip
    keras.append(keras_fit(args.keras_python, raw_dir))
    print(f"seed 003 Keras program, again: test {100 * keras[1]['test_accuracy']:.2f} %"
          f"  fit {keras[1]['fit_seconds']:.1f} s")  # fmt: skip
    print(format_train(ours))
    k = statistics.fmean(r["fit_seconds"] for r in keras)
    s = ours["summary"]
    print(
        f"ratio: Keras fit {k:.1f} s / {args.recipe} fit {s['fit_seconds_mean']:.2f} s = "
        f"{k / s['fit_seconds_mean']:.1f}x less time",
        end="",
    )
    if s["seconds_to_target_mean"] is not None:
        print(
            f"; to {100 * ours['target']:.1f} % ({s['reached_target']}/{s['seeds']} seeds): "
            f"{k / s['seconds_to_target_mean']:.1f}x",
            end="",
        )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
