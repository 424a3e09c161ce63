"""``mnistkit serve --workers N``: N processes answering on one port, each with its own model.

One process serves HTTP, decodes, preprocesses and batches under one GIL: about one core's
worth of work, however many the machine has. Here the parent holds the port
(:func:`mnistkit.serve.server.reserve`) and starts N workers; each loads the model once, builds
the app, then listens on the port with a socket of its own, and serves the connections the
kernel hands it. The parent only supervises: a worker that dies is replaced (one log line, after
a growing delay if it keeps dying), Ctrl-C or SIGTERM stops them all.

Workers are spawned (a fresh interpreter), not forked: a fork of a process whose OpenMP or
onnxruntime thread pools have started can deadlock in the child.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from mnistkit.errors import MnistkitError, ServerFailed
from mnistkit.heap import keep_freed_memory

log = logging.getLogger("mnistkit.serve")

STOP_TIMEOUT_S = 10.0  # a worker finishing its requests after SIGTERM, then it is killed
# Restarts (Supervisor): a worker that served this long before it died is replaced at once;
# one that dies sooner is a crash loop, replaced after 1, 2, 4 ... 30 s.
STEADY_S = 30.0
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
GIVE_UP = 3  # replacements failed in a row with no worker left: the server stops


@dataclass(frozen=True)
class ServeSettings:
    """What one server process needs to build and run the service (picklable: the workers
    get it from the parent).

    Attributes:
        run_dir: the run directory (the default model's is resolved in the parent first).
        backend: "torch" or "onnx".
        threads: inference threads of this process (torch or onnxruntime); None leaves the
            libraries' defaults. OpenCV always runs on one.
        max_bytes, max_pixels, timeout, max_batch, allowed_hosts: :func:`create_app`'s.
        max_connections: open connections per process beyond which uvicorn answers 503.
        quiet: warnings only, no access log.
    """

    run_dir: str | None
    backend: str
    threads: int | None
    max_bytes: int
    max_pixels: int
    timeout: float
    max_batch: int
    max_connections: int
    allowed_hosts: tuple[str, ...] | None
    quiet: bool


def setup_logging(quiet: bool, workers: int) -> None:
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if workers > 1:  # whose line is it
        fmt = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format=fmt)


def build_app(settings: ServeSettings) -> tuple[Any, dict[str, Any]]:
    """The service for ``settings`` and its model's info (recipe, accuracy, backend...).

    Raises:
        MnistkitError: the run cannot be loaded with this backend.
    """
    import cv2

    from mnistkit.infer.predict import Classifier
    from mnistkit.serve import create_app

    # OpenCV on one thread: a request's image is small work, and requests run side by side in
    # the workers. On 2 busy cores, the canvas's connected components took 0.92 ms on two
    # threads (waiting for each other) against 0.35 ms on one.
    cv2.setNumThreads(1)
    keep_freed_memory()  # fresh pages for every request's arrays cost a third of the time
    clf = Classifier.load(
        settings.run_dir, backend=settings.backend, max_bytes=settings.max_bytes,
        max_pixels=settings.max_pixels, quiet=settings.quiet, threads=settings.threads,
    )  # fmt: skip
    app = create_app(
        clf,
        max_bytes=settings.max_bytes,
        max_pixels=settings.max_pixels,
        timeout_s=settings.timeout,
        max_batch=settings.max_batch,
        allowed_hosts=settings.allowed_hosts,
    )
    return app, clf.info


def run_app(app: Any, sock: socket.socket, settings: ServeSettings) -> None:
    from mnistkit.serve import server

    server.run(app, sock, head_timeout=settings.timeout,
               max_connections=settings.max_connections, quiet=settings.quiet)  # fmt: skip


def _worker(
    address: tuple[str, int], settings: ServeSettings, workers: int, conn: Connection
) -> None:
    """A worker process: load, listen on the shared port, say "ready" (or the error) to the
    parent, serve until stopped."""
    # Ctrl-C reaches the whole process group; the parent answers it by stopping the workers
    # with SIGTERM. Ignored here, it prints no traceback from a worker still loading the model
    # (uvicorn installs its own handlers once it serves).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _stop_with_parent()
    setup_logging(settings.quiet, workers)
    from mnistkit.serve import server

    try:
        app, info = build_app(settings)
        sock = server.listen_shared(*address)
    except MnistkitError as e:
        conn.send(("error", str(e)))
        return
    except OSError as e:
        conn.send(("error", f"cannot listen on {address[0]}:{address[1]} ({e.strerror or e})."))
        return
    conn.send(("ready", info))
    conn.close()
    run_app(app, sock, settings)


class Supervisor:
    """``workers`` worker processes sharing the port that ``reserved`` holds
    (:func:`mnistkit.serve.server.reserve`), kept running: a worker that dies is replaced.

    A worker that dies within ``STEADY_S`` of its start, or a replacement that cannot load the
    model, is tried again after a delay that doubles from ``FIRST_DELAY_S`` up to
    ``MAX_DELAY_S`` (:func:`restart_delay`), while the other workers go on answering: a worker
    that crashes on every start does not spin the machine. Once no worker is left and
    ``GIVE_UP`` replacements in a row have failed, the server stops (:class:`ServerFailed`)
    rather than keep a port that accepts connections nobody answers.
    """

    def __init__(self, reserved: socket.socket, workers: int, settings: ServeSettings):
        host, port = reserved.getsockname()[:2]
        self.address = (str(host), int(port))
        self.workers = workers
        self.settings = settings
        self.procs: dict[int, BaseProcess] = {}  # slot -> its worker
        self.started: dict[int, float] = {}  # slot -> when its worker became ready
        self._ctx = mp.get_context("spawn")

    def spawn(self, slot: int) -> Connection:
        """Start the worker of ``slot``; returns the end its "ready" comes on."""
        receive, send = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=_worker, args=(self.address, self.settings, self.workers, send),
            name="mnistkit-serve-worker",
        )  # fmt: skip
        proc.start()
        send.close()  # ours: recv() sees EOF when the worker dies without a word
        self.procs[slot] = proc
        return receive

    def ready(self, slot: int, receive: Connection) -> dict[str, Any]:
        """Wait until the worker of ``slot`` has loaded the model; returns the model's info.

        Raises:
            MnistkitError: it could not load the model, or died before it was ready.
        """
        proc = self.procs[slot]
        try:
            kind, payload = receive.recv()
        except EOFError:
            proc.join(5)
            raise MnistkitError(
                f"a server worker exited ({_how(proc.exitcode)}) before it was ready; "
                "see the log above."
            ) from None
        finally:
            receive.close()
        if kind == "error":
            proc.join(5)
            raise MnistkitError(payload)
        self.started[slot] = time.monotonic()
        return dict(payload)

    def start_all(self) -> dict[str, Any]:
        """Start every worker at once (each loads its model while the others do) and wait for
        all; returns the model's info.

        Raises:
            MnistkitError: a worker could not load the model.
        """
        pending = {slot: self.spawn(slot) for slot in range(self.workers)}
        info: dict[str, Any] = {}
        for slot, receive in pending.items():
            info = self.ready(slot, receive)
        return info

    def run(self, on_ready: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Serve until Ctrl-C or SIGTERM; ``on_ready(info)`` once every worker is up.

        Raises:
            MnistkitError: a worker could not load the model at the start (all are stopped).
            ServerFailed: every worker has died and ``GIVE_UP`` replacements in a row failed.
        """
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            info = self.start_all()
            if on_ready is not None:
                on_ready(info)
            self._supervise()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.stop()

    def _supervise(self) -> None:
        due: dict[int, float] = {}  # slot -> when to start its next worker
        delay: dict[int, float] = {}  # slot -> the delay its last restart waited
        failures = 0  # replacements failed in a row while no worker was left
        while True:
            live = [p.sentinel for slot, p in self.procs.items() if slot not in due]
            wake = min(due.values(), default=None)
            timeout = None if wake is None else max(0.0, wake - time.monotonic())
            if live or timeout is not None:
                wait(live, timeout)
            now = time.monotonic()
            for slot, proc in list(self.procs.items()):
                if slot in due or proc.exitcode is None:
                    continue
                uptime = now - self.started.get(slot, now)
                delay[slot] = restart_delay(delay.get(slot, 0.0), uptime)
                due[slot] = now + delay[slot]
                wait_text = f" in {delay[slot]:g} s" if delay[slot] else ""
                log.warning("server worker %d exited (%s); starting another%s", proc.pid,
                            _how(proc.exitcode), wait_text)  # fmt: skip
            for slot in [s for s, t in due.items() if t <= now]:
                try:
                    self.ready(slot, self.spawn(slot))
                except MnistkitError as e:
                    alive = any(p.exitcode is None for s, p in self.procs.items() if s != slot)
                    failures = 0 if alive else failures + 1
                    if failures >= GIVE_UP:
                        raise ServerFailed(
                            f"every server worker has stopped and {GIVE_UP} replacements in a "
                            f"row failed ({e}); the server stops."
                        ) from None
                    delay[slot] = restart_delay(delay[slot], 0.0)
                    due[slot] = time.monotonic() + delay[slot]
                    log.warning("a server worker could not start (%s); trying again in %g s",
                                e, delay[slot])  # fmt: skip
                else:
                    del due[slot]
                    failures = 0

    def stop(self) -> None:
        """SIGTERM to every worker (uvicorn finishes the requests under way), then SIGKILL to
        those still running after ``STOP_TIMEOUT_S``."""
        for proc in self.procs.values():
            if proc.exitcode is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                proc.kill()
                proc.join()
        self.procs.clear()


def restart_delay(previous: float, uptime: float) -> float:
    """Seconds to wait before replacing a worker that ran ``uptime`` seconds (0 for one that
    never became ready), after waiting ``previous`` the last time: none for a worker that ran
    steadily, else twice the last delay, from ``FIRST_DELAY_S`` up to ``MAX_DELAY_S``."""
    if uptime >= STEADY_S:
        return 0.0
    return min(MAX_DELAY_S, max(FIRST_DELAY_S, 2 * previous))


def _stop_with_parent() -> None:
    """SIGTERM to this worker when the supervisor dies, even by SIGKILL (Linux's
    PR_SET_PDEATHSIG): no orphan keeps answering on the port."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _how(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity) on Linux; 1 elsewhere, where
    SO_REUSEPORT is missing (Windows) or does not spread connections over the sockets (macOS)."""
    if not sys.platform.startswith("linux"):
        return 1
    return max(1, len(os.sched_getaffinity(0)))


def threads_per_worker(workers: int) -> int:
    """Inference threads for each of ``workers`` processes, so that together they use the
    cores once: each worker's decoding and preprocessing needs a core too, and threads beyond
    the cores only wait for them."""
    return max(1, default_workers() // workers)
