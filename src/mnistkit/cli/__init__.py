"""The ``mnistkit`` command line: parses arguments, calls library functions, maps errors.

Each command group lives in its own module with ``register(subparsers, common)``; this module
holds what they share: the options every command takes and the error -> exit status rule
(0 done, 2 bad usage or input with one line on stderr, 130 interrupted, 1 anything else).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from mnistkit.cli import bench_cmds, data_cmds, predict_cmds, report_cmds, serve_cmds, train_cmds
from mnistkit.errors import MnistkitError

# Command modules, in the order `mnistkit --help` lists them.
COMMAND_MODULES = [data_cmds, train_cmds, report_cmds, predict_cmds, serve_cmds, bench_cmds]

Handler = Callable[[argparse.Namespace], int]
LAUNCHED_ENV = "MNISTKIT_LAUNCHED"  # set by `mnistkit train --nproc` for the ranks it starts


def rank_error_exit(e: MnistkitError) -> NoReturn:
    """A usage or data error in a rank started by ``--nproc``: every rank checks the same
    arguments and files on one machine, so rank 0 says it for all and leaves at once (no slow
    interpreter teardown), and the others leave a moment later. torchrun's agent thus sees
    rank 0's own exit status first, and the launcher adds nothing (``launch.launch``)."""
    if os.environ["RANK"] == "0":
        print(f"mnistkit: error: {e}", file=sys.stderr, flush=True)
    else:
        time.sleep(2.0)
    os._exit(2)


def common_options() -> argparse.ArgumentParser:
    """Options every command accepts, before or after its name."""
    p = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's default must not overwrite a value given before its name.
    p.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,
        help="folder with the IDX files (raw or .gz) or mnist.npz; default $MNISTKIT_DATA_DIR",
    )
    p.add_argument(
        "--cache-dir",
        default=argparse.SUPPRESS,
        help="data cache; default $MNISTKIT_CACHE or ~/.cache/mnistkit (XDG-aware)",
    )
    p.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                   help="print results only, no progress")  # fmt: skip
    return p


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="mnistkit",
        description="Handwritten digit recognition: data, training, evaluation, prediction.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"mnistkit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub, common)
    return parser


def _version() -> str:
    from mnistkit import __version__

    return __version__


def log(args: argparse.Namespace, message: str) -> None:
    """Progress for people: stderr, silenced by --quiet."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def data_options(args: argparse.Namespace) -> dict[str, object]:
    """The keyword arguments of :func:`mnistkit.data.load` that the shared options set."""
    return {
        "data_dir": getattr(args, "data_dir", None),
        "cache_dir": getattr(args, "cache_dir", None),
        "log": (lambda m: log(args, m)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except MnistkitError as e:
        if os.environ.get(LAUNCHED_ENV) and "RANK" in os.environ:
            rank_error_exit(e)
        print(f"mnistkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mnistkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mnistkit ... | head`: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
