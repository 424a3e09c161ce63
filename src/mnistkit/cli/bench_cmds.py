"""``mnistkit bench train | infer``: figures with the machine they were measured on."""

from __future__ import annotations

import argparse

from mnistkit.cli.common import log
from mnistkit.errors import MnistkitError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    help = "benchmarks that print figures (never a pass/fail on time)"
    p = sub.add_parser("bench", help=help, description=help, parents=[common])
    bench = p.add_subparsers(dest="bench_command", metavar="WHAT", required=True)

    help = "train a recipe over several seeds: accuracy, fit seconds, examples/s, time to target"
    t = bench.add_parser("train", help=help, description=help, parents=[common])
    t.add_argument("--recipe", default="fast", help="recipe to train (default fast)")
    t.add_argument("--seeds", type=int, default=5, help="how many seeds (default 5)")
    t.add_argument("--first-seed", type=int, default=0, help="the first seed (default 0)")
    t.add_argument("--epochs", type=int, help="override the recipe's epochs")
    t.add_argument("--target", type=float, default=0.99,
                   help="test accuracy whose first crossing is timed (default 0.99)")  # fmt: skip
    t.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    t.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    t.add_argument("--dataset", default="mnist")
    t.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    t.add_argument("--keep", metavar="DIR",
                   help="keep each seed's run directory as DIR/seedN (default: thrown away)")  # fmt: skip
    t.set_defaults(handler=cmd_bench_train)

    help = "inference speed: images/s at batch 1, 64, 1024 and single-image latency"
    i = bench.add_parser("infer", help=help, description=help, parents=[common])
    i.add_argument("--model", default="fast-cnn", help="registered model (default fast-cnn)")
    i.add_argument("--run", metavar="RUN_DIR", help="measure this run's model instead")
    i.add_argument("--batch-sizes", default="1,64,1024", help="comma-separated (default 1,64,1024)")
    i.add_argument("--seconds", type=float, default=1.0, help="time per batch size (default 1)")
    i.add_argument("--threads", type=int, help="CPU threads for PyTorch and ONNX Runtime")
    i.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    i.set_defaults(handler=cmd_bench_infer)


def cmd_bench_train(args: argparse.Namespace) -> int:
    from mnistkit.bench.train import bench_train, format_train, save_json

    if args.seeds < 1:
        raise MnistkitError(f"--seeds must be at least 1, not {args.seeds}.")
    if not 0 < args.target <= 1:
        raise MnistkitError(f"--target is a fraction in (0, 1], not {args.target}.")
    result = bench_train(
        args.recipe, seeds=args.seeds, first_seed=args.first_seed, target=args.target,
        device=args.device, threads=args.threads, dataset=args.dataset, epochs=args.epochs,
        data_dir=getattr(args, "data_dir", None), cache_dir=getattr(args, "cache_dir", None),
        keep=args.keep, log=lambda m: log(args, m),
    )  # fmt: skip
    print(format_train(result))
    if args.json:
        save_json(args.json, result)
        log(args, f"wrote {args.json}")
    return 0


def cmd_bench_infer(args: argparse.Namespace) -> int:
    import torch

    from mnistkit.bench.infer import bench_infer, format_infer, load_for_bench
    from mnistkit.bench.train import save_json
    from mnistkit.infer.verifier import load_verifier

    try:
        sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    except ValueError:
        raise MnistkitError(
            f"--batch-sizes wants integers like 1,64,1024, not {args.batch_sizes!r}."
        ) from None
    if not sizes or min(sizes) < 1:
        raise MnistkitError(f"--batch-sizes must be positive, not {args.batch_sizes!r}.")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_for_bench(args.run, args.model)
    verifier = load_verifier(args.run) if args.run else None
    result = bench_infer(model, name=args.run or args.model, batch_sizes=sizes,
                         min_seconds=args.seconds, verifier=verifier)  # fmt: skip
    print(format_infer(result))
    if args.json:
        save_json(args.json, result)
        log(args, f"wrote {args.json}")
    return 0
