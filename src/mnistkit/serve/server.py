"""Running the service: uvicorn on a socket bound here, with a deadline on request heads.

uvicorn (0.55) bounds the time a connection may sit idle after a response
(``timeout_keep_alive``), but nothing bounds the time a client takes to send a request's head:
a connection that sends nothing, or its headers a byte at a time, stays open as long as the
client likes, and any byte it sends cancels even the keep-alive timer. :class:`HeadDeadline`
closes a connection whose next request head has not arrived within the deadline, counted from
the moment it opened or answered its last request; the body's own deadline is the app's
(``create_app``'s ``timeout_s``). Measured with ``--timeout 3`` (50 clients sending a head a
byte a second, 10 sending nothing): without it all 60 were still open when the clients gave
up after 30 s; with it each was closed after 3.0 s.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from mnistkit.errors import MnistkitError

log = logging.getLogger("mnistkit.serve")


class HeadDeadline(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request head is late.

    A client that sent part of a head gets a JSON 408 first; an idle one is just closed, as
    uvicorn closes an idle keep-alive connection. ``head_timeout`` is set by :func:`run`.
    """

    head_timeout = 10.0  # seconds

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._answered = self.cycle  # a new request head makes a new cycle
        self._deadline = self.loop.call_later(self.head_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._answered:  # the head is complete
            self._disarm()

    def on_response_complete(self) -> None:
        answered = self.cycle
        super().on_response_complete()  # may start a pipelined request: a new cycle
        if not self.transport.is_closing() and self.cycle is answered:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.conn.trailing_data[0]:  # part of a head came
            body = json.dumps(
                {"error": f"The request head did not arrive within {self.head_timeout:g} s."}
            ).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            log.warning("%s: no request head within %g s -> 408", self.client, self.head_timeout)
        self.transport.close()


def bind(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` as uvicorn makes one (SO_REUSEADDR; IPv6 for an
    address with a colon), so that a port in use is one sentence, not uvicorn's log and exit 3.

    Raises:
        MnistkitError: the port is in use, or the address cannot be bound here.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's backlog; with SO_REUSEADDR, Linux may say "in use" here
    except OSError as e:  # socket.gaierror too: a host name that does not resolve
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise MnistkitError(
                f"port {port} on {host} is already in use (another server?); choose another --port."
            ) from None
        raise MnistkitError(f"cannot listen on {host}:{port} ({e.strerror or e}).") from None
    return sock


def reserve(host: str, port: int) -> socket.socket:
    """Hold ``host:port`` for ``--workers``: a socket bound with SO_REUSEPORT but not
    listening, so that only our workers (:func:`listen_shared`, same user) may share the port,
    and no connection is ever queued on it.

    Each worker listens on a socket of its own, opened once its model is loaded: the kernel
    spreads new connections over the workers' sockets (on one shared socket, the worker that
    woke first took every connection of a burst: wrk's 32 connections went 32 and 0 in two of
    three runs), and a dead worker's socket closes with it, so no connection waits for a
    worker that is not there. (A socket the parent kept open for a dead worker queued half the
    new connections until its replacement was up: forever, if the replacement could not load.)

    The port is first bound alone, without SO_REUSEPORT, so that one held by another server
    (ours included) is refused as :func:`bind` refuses it rather than shared.

    Raises:
        MnistkitError: as :func:`bind`; or the system lacks SO_REUSEPORT.
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        raise MnistkitError("--workers above 1 needs SO_REUSEPORT, which this system lacks; "
                            "use --workers 1.")  # fmt: skip
    probe = bind(host, port)
    port = probe.getsockname()[1]  # --port 0: the one the system chose, for all of them
    probe.close()
    try:
        return _shared(host, port)
    except OSError as e:  # taken between the probe and here
        raise MnistkitError(f"cannot listen on {host}:{port} ({e.strerror or e}).") from None


def listen_shared(host: str, port: int) -> socket.socket:
    """A worker's own listening socket on the port :func:`reserve` holds.

    Raises:
        OSError: the port cannot be shared (not held by a process of this user).
    """
    sock = _shared(host, port)
    try:
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _shared(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def run(app: Any, sock: socket.socket, *, head_timeout: float, max_connections: int,
        quiet: bool) -> None:  # fmt: skip
    """Serve ``app`` on ``sock`` (from :func:`bind`) until Ctrl-C or SIGTERM.

    Args:
        app: the ASGI app.
        sock: a bound socket.
        head_timeout: seconds a connection has to send each request head.
        max_connections: open connections beyond which uvicorn answers 503 at once
            (``limit_concurrency``).
        quiet: warnings only, no access log.
    """
    protocol = type("HeadDeadlineProtocol", (HeadDeadline,), {"head_timeout": head_timeout})
    config = uvicorn.Config(
        app,
        http=protocol,
        ws="none",  # no WebSocket routes: an upgrade is a plain request, under the deadline
        log_level="warning" if quiet else "info",
        access_log=not quiet,
        timeout_keep_alive=5,
        limit_concurrency=max_connections,
    )
    uvicorn.Server(config).run(sockets=[sock])
