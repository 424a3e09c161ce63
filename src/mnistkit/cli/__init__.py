"""The ``mnistkit`` command line: parses arguments, calls library functions, maps errors.

Each command group lives in its own module with ``register(subparsers, common)``; this module
holds what they share: the options every command takes and the error -> exit status rule
(0 done, 2 bad usage or input with one line on stderr, 130 interrupted, 1 anything else).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from mnistkit.cli import bench_cmds, data_cmds, predict_cmds, report_cmds, serve_cmds, train_cmds
from mnistkit.cli.common import Handler, common_options, rank_error_exit
from mnistkit.errors import MnistkitError
from mnistkit.training.launch import LAUNCHED_ENV

# Command modules, in the order `mnistkit --help` lists them.
COMMAND_MODULES = [data_cmds, train_cmds, report_cmds, predict_cmds, serve_cmds, bench_cmds]


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
    from mnistkit.version import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `predict RUN --backend onnx IMAGE ...`: argparse ends a positional list at the first
    # option, so the images after it come back unparsed; they are the list's continuation.
    if (
        extra
        and isinstance(getattr(args, "inputs", None), list)
        and not any(e.startswith("-") and e != "-" for e in extra)
    ):
        args.inputs += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
