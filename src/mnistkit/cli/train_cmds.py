"""``mnistkit train | evaluate | reproduce | models | summary``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from mnistkit import rundir as runs
from mnistkit.errors import MnistkitError, TrainingDiverged, TrainingInterrupted


def _training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seed", type=int, default=0, help="seeds weights, shuffling, dropout (default 0)"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    p.add_argument("--dataset", default="mnist", help="data set to train on (default mnist)")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", help="train a recipe and write a run directory", parents=[common])
    p.add_argument("--recipe", help="recipe name (see `mnistkit models`)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--lr", type=float, help="override the recipe's learning rate")
    p.add_argument("--val-split", type=float, default=0.0, help="held-out fraction (default 0)")
    p.add_argument("--out", help="run directory (default runs/RECIPE-DATE-TIME)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="allow a non-empty --out")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train on N local processes (torchrun, DistributedDataParallel); "
                        "--batch-size stays the global batch")  # fmt: skip
    _training_options(p)
    p.set_defaults(handler=cmd_train, train_parser=p)

    help = "test metrics of a run: loss, accuracy, per-class precision/recall, overfitting gap"
    p = sub.add_parser("evaluate", help=help, description=help, parents=[common])
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--report", action="store_true", help="also write plots and report.html")
    p.set_defaults(handler=cmd_evaluate)

    help = "train the seed recipes and print each seed's figure beside ours"
    p = sub.add_parser("reproduce", help=help, description=help, parents=[common])
    p.add_argument("recipes", nargs="*", metavar="RECIPE", help="default: every seed-* recipe")
    p.add_argument("--epochs", type=int, help="override every recipe's epochs")
    p.add_argument("--out-dir", default="runs/reproduce", help="where the runs go")
    _training_options(p)
    p.set_defaults(handler=cmd_reproduce)

    p = sub.add_parser("models", help="registered models and recipes", parents=[common])
    p.set_defaults(handler=cmd_models)
    p = sub.add_parser("summary", help="Keras-style table of a model's layers", parents=[common])
    p.add_argument("model", metavar="MODEL")
    p.set_defaults(handler=cmd_summary)


def _train_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "seed": args.seed, "device": args.device, "threads": args.threads,
        "dataset": args.dataset, "data_dir": getattr(args, "data_dir", None),
        "cache_dir": getattr(args, "cache_dir", None), "quiet": getattr(args, "quiet", False),
    }  # fmt: skip


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def cmd_train(args: argparse.Namespace) -> int:
    from mnistkit.training import distributed
    from mnistkit.training.runner import train

    if args.recipe is None and args.resume is None:
        raise MnistkitError("give --recipe NAME (see `mnistkit models`) or --resume RUN_DIR.")
    if args.nproc not in (None, 1):
        return launch_ranks(args)
    try:
        run = train(args.recipe, out=args.out, epochs=args.epochs, batch_size=args.batch_size,
                    lr=args.lr, val_split=args.val_split, resume=args.resume,
                    overwrite=args.overwrite, **_train_kwargs(args))  # fmt: skip
    except TrainingInterrupted as e:
        return interrupted(e)
    except TrainingDiverged as e:  # every rank sees the same summed loss: rank 0 says it
        return failed(str(e) if distributed.is_main_process() else None)
    except RuntimeError as e:  # under torchrun: another rank died or stopped answering
        if not distributed.is_peer_failure(e):
            raise
        return failed(distributed.explain(e))
    if not distributed.is_main_process():
        return 0  # rank 0 prints the results
    m = run.metrics
    print(f"{run.path}: {m['recipe']}, {m['epochs']} epochs in {m['train_seconds']:.1f} s "
          f"({m['examples_per_second']:.0f} examples/s on {m['device']}, {m['threads']} threads)")  # fmt: skip
    print(f"test accuracy {pct(m['test_accuracy'])}  test loss {m['test_loss']:.4f}  "
          f"train accuracy {pct(m['train_accuracy'])}  val accuracy {pct(m['val_accuracy'])}")  # fmt: skip
    print(
        f"calibration {calibration_text(run.temperature, m['test_ece_uncalibrated'], m['test_ece'])}"
    )
    return 0


def calibration_text(temperature: float, ece_before: float, ece_after: float) -> str:
    """The calibration's effect, as ``train`` and ``evaluate`` print it."""
    if temperature == 1.0:
        return f"none (T = 1)  test ECE {pct(ece_before)}"
    return f"T = {temperature:.3g}  test ECE {pct(ece_before)} before, {pct(ece_after)} after"


def launch_ranks(args: argparse.Namespace) -> int:
    """``train --nproc N``: this command line without ``--nproc``, on N torchrun ranks."""
    from mnistkit.training import distributed

    if args.nproc < 1:
        raise MnistkitError(f"--nproc must be a positive number of processes, not {args.nproc}.")
    if distributed.world_size() > 1:
        raise MnistkitError("--nproc starts torchrun itself; under torchrun leave it out.")
    argv = ["train"]
    for action in args.train_parser._actions:  # every option given, as the ranks must see it
        value = getattr(args, action.dest, None)
        if not action.option_strings or action.dest in ("help", "nproc"):
            continue
        if value is not None and value is not False and value != action.default:
            flag = max(action.option_strings, key=len)
            argv += [flag] if value is True else [flag, str(value)]
    from mnistkit.training.launch import launch

    return launch(args.nproc, argv, args.threads)


def failed(message: str | None) -> int:
    """Exit status 1 with one line. A rank of a process group leaves at once (``os._exit``):
    at a normal exit the group's teardown and the interpreter's finalizers run while gloo's
    threads still hold connections to a lost rank, and one of them may then throw where
    nothing catches it, so the C++ runtime aborts the process ("terminate called after
    throwing an instance of 'gloo::IoException'": exit status -6 instead of 1, in 2 of 40 runs
    of test_a_lost_rank_stops_the_others_with_one_clear_line on the 2-core machine)."""
    import torch.distributed as dist

    if message is not None:
        print(f"mnistkit: error: {message}", file=sys.stderr, flush=True)
    if dist.is_available() and dist.is_initialized():
        sys.stdout.flush()
        os._exit(1)
    return 1


def interrupted(e: TrainingInterrupted) -> int:
    """Ctrl-C (exit 130) or SIGTERM (143) stopped a run after saving: one line on how to resume."""
    print(f"mnistkit: interrupted; the run is saved, continue it with "
          f"`mnistkit train --resume {shlex.quote(str(e.run_dir))}`", file=sys.stderr)  # fmt: skip
    return e.exit_status


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mnistkit.training.evaluate import evaluate_run

    data_dir, cache_dir = getattr(args, "data_dir", None), getattr(args, "cache_dir", None)
    # With --report the figures and the report come from the same weights: while a training
    # rewrites the run, both are refused before either is computed.
    with runs.hold(args.run_dir, training=False) if args.report else contextlib.nullcontext():
        res = evaluate_run(args.run_dir, device=args.device, data_dir=data_dir, cache_dir=cache_dir)
        if args.report:
            from mnistkit.report import write_report

            write_report(args.run_dir, data_dir=data_dir, cache_dir=cache_dir)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"run       {args.run_dir} ({res['recipe']}, {res['dataset']})")
    print(f"test      accuracy {pct(res['test_accuracy'])}  loss {res['test_loss']:.4f}")
    print(f"train     accuracy {pct(res['train_accuracy'])}  loss {res['train_loss']:.4f}")
    cal = calibration_text(res["temperature"], res["test_ece_uncalibrated"], res["test_ece"])
    print(f"calibr.   {cal}")
    gap = res["train_accuracy"] - res["test_accuracy"]
    print(f"gap       {100 * gap:+.2f} points train - test"
          f"{' (overfitting: the model does better on what it has seen)' if gap > 0 else ''}")  # fmt: skip
    print()
    print(f"{'class':>5}  {'precision':>9}  {'recall':>7}  {'support':>7}")
    for row in res["per_class"]:
        print(f"{row['class']:>5}  {100 * row['precision']:>8.2f}%  "
              f"{100 * row['recall']:>6.2f}%  {row['support']:>7}")  # fmt: skip
    if args.report:
        print(f"\nwrote {Path(args.run_dir) / 'report.html'}")
    return 0


def reproduce_table(rows: list[dict[str, Any]]) -> str:
    """The ``reproduce`` table as aligned text (also pasted into the README)."""
    head = [
        "recipe",
        "seed file",
        "seed test acc",
        "ours",
        "train acc",
        "epochs",
        "fit s",
        "total s",
    ]
    cells = [head] + [
        [r["recipe"], r["source"], pct(r["reported"]), pct(r["test_accuracy"]),
         pct(r["train_accuracy"]), str(r["epochs"]), f"{r['train_seconds']:.1f}",
         f"{r['total_seconds']:.1f}"]
        for r in rows
    ]  # fmt: skip
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in cells]  # fmt: skip
    return "\n".join(line.rstrip() for line in lines)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from mnistkit.recipes import get_recipe, seed_recipes
    from mnistkit.training.runner import train

    names = args.recipes or seed_recipes()
    recipes = [get_recipe(n) for n in names]  # every name checked before any training
    rows = []
    for rec in recipes:
        if not getattr(args, "quiet", False):
            print(f"== {rec.name} ({rec.source})", flush=True)
        try:
            run = train(rec, out=Path(args.out_dir) / rec.name, epochs=args.epochs,
                        overwrite=True, **_train_kwargs(args))  # fmt: skip
        except TrainingInterrupted as e:
            return interrupted(e)
        except TrainingDiverged as e:
            return failed(str(e))
        seeds = "+".join(f.strip().split("_")[0] for f in rec.source.split(",") if f.strip())
        rows.append(dict(run.metrics, source=seeds or "-", reported=rec.reported_test_accuracy))
    print(reproduce_table(rows))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from mnistkit.models import MODELS, count_parameters, create_model
    from mnistkit.recipes import RECIPES

    print(f"{'model':<14}  {'parameters':>10}  description")
    for name, fn in MODELS.items():
        doc = (fn.__doc__ or "").strip().splitlines()[0]
        print(f"{name:<14}  {count_parameters(create_model(name)):>10,}  {doc}")
    print()
    print(
        f"{'recipe':<18}  {'model':<14}  {'optimizer':<9}  {'lr':>6}  {'batch':>5}  {'epochs':>6}  source"
    )
    for make in RECIPES.values():
        r = make()
        print(f"{r.name:<18}  {r.model:<14}  {r.optimizer:<9}  {r.lr:>6g}  {r.batch_size:>5}  "
              f"{r.epochs:>6}  {r.source or 'ours'}")  # fmt: skip
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from mnistkit.models import create_model
    from mnistkit.report.summary import summary

    print(summary(create_model(args.model)))
    return 0
