"""What the command modules share: the options every command takes, progress output, and how a
rank started by ``--nproc`` reports a usage error."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import NoReturn

from mnistkit.errors import MnistkitError

Handler = Callable[[argparse.Namespace], int]


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
        help="cache of data sets and the default model; default $MNISTKIT_CACHE or "
        "~/.cache/mnistkit (XDG-aware)",
    )
    p.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                   help="print results only, no progress")  # fmt: skip
    return p


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
