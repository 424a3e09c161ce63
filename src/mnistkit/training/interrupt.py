"""Ctrl-C and SIGTERM during training: finish the step, save, stop, say how to resume.

While :class:`StopOnSignal` is active, the first SIGINT or SIGTERM only sets a flag; the
training loop asks the flag before every step and, when it is set, writes a mid-epoch
checkpoint and returns (:class:`~mnistkit.training.loop.Hooks`' ``stop``). Outside that window (final evaluation,
writing the run files), or at a second signal, it raises :class:`TrainingInterrupted` at
once: every file is written atomically, so the run directory still holds a complete
checkpoint to resume from. The CLI turns the exception into one line and exit status
130 (SIGINT) or 143 (SIGTERM), the shell's 128 + signal number.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from mnistkit.errors import TrainingInterrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignal:
    """Handlers for SIGINT and SIGTERM while a run trains; also the ``stop`` hook of the training loop.

    Args:
        run_dir: named in the exception, for the resume hint.
        enabled: False installs nothing (torchrun ranks, or a thread other than the main one,
            where Python cannot install signal handlers).
    """

    def __init__(self, run_dir: object, enabled: bool = True):
        self.run_dir = run_dir
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self.deferring = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if self.enabled:
            for sig in SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.deferring and self.signum is None:
            self.signum = signum  # the loop saves and stops before its next step
            return
        raise TrainingInterrupted(self.signum or signum, self.run_dir)

    def __call__(self) -> bool:
        """True once a signal asked to stop."""
        return self.signum is not None

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Inside, a first signal only sets the flag."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False

    def check(self) -> None:
        """Raise :class:`TrainingInterrupted` if a signal came (say, during the last step)."""
        if self.signum is not None:
            raise TrainingInterrupted(self.signum, self.run_dir)
