"""``mnistkit train --nproc N``: start N local ranks with torchrun's own launcher.

The ranks run the command line again without ``--nproc``; everything they do once started is
in :mod:`mnistkit.training.distributed`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path

from mnistkit.cli import LAUNCHED_ENV


def launch(nproc: int, argv: list[str], threads: int | None = None) -> int:
    """Run ``python -m mnistkit ARGV`` on ``nproc`` local ranks with torchrun's launcher, as
    ``torchrun --standalone --nproc-per-node NPROC -m mnistkit ARGV`` would.

    A rank that fails makes the launcher stop the others. Ranks other than 0 write their
    stderr to a temporary folder, shown only when rank 0 did not already explain the failure.

    Args:
        nproc: processes on this machine.
        argv: the mnistkit command line for each rank.
        threads: CPU threads per rank; default the machine's cores shared out, at least 1.

    Returns:
        The exit status: 0, rank 0's own status if it failed, else that of a failed rank.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # torchrun's agent logs each stop and failure; the ranks' own messages say it better.
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # torchrun's agent installs its own SIGINT/SIGTERM/SIGHUP/SIGQUIT handlers and leaves
    # them behind; put the caller's back afterwards (tests, or anyone calling this in-process).
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                                                 signal.SIGQUIT)}  # fmt: skip
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ[LAUNCHED_ENV] = "1"  # ranks other than 0 leave usage errors to rank 0
    if threads or saved is None:  # the ranks inherit it; torchrun's own default is 1
        os.environ["OMP_NUM_THREADS"] = str(threads or max(1, (os.cpu_count() or 1) // nproc))
    with tempfile.TemporaryDirectory(prefix="mnistkit-ranks-") as logs:
        config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
            rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0,
            logs_specs=DefaultLogsSpecs(log_dir=logs, redirects={r: Std.ERR for r in range(1, nproc)}),
        )  # fmt: skip
        try:
            elastic_launch(config, sys.executable)("-m", "mnistkit", *argv)
            return 0
        except SignalException as e:  # Ctrl-C or SIGTERM: the ranks got it too; rank 0 says so
            return 128 + int(e.sigval)
        except ChildFailedError as e:
            failed = {f.local_rank: f.exitcode for f in e.failures.values()}
            if 0 in failed and failed[0] > 0:
                return failed[0]  # rank 0 printed its own error
            shown = "".join(
                p.read_text(errors="replace") for p in sorted(Path(logs).rglob("stderr.log"))
            )
            code = next((c for c in failed.values() if c > 0), 1)
            sys.stderr.write(shown or f"mnistkit: error: a rank stopped with exit status {code} "
                                      "before rank 0 could say why; run once without --nproc to see it.\n")  # fmt: skip
            return code
        finally:
            os.environ.pop(LAUNCHED_ENV, None)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved
