"""``mnistkit serve [RUN_DIR]``: the HTTP API and drawing page for one trained run (default:
the default model, trained into the cache on first use)."""

from __future__ import annotations

import argparse
import logging
import math

from mnistkit.cli.common import log
from mnistkit.errors import MnistkitError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    help = "serve a run over HTTP: a JSON API and a page to draw digits on"
    p = sub.add_parser("serve", help=help, description=help, parents=[common])
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?",
                   help="run directory written by `mnistkit train` (default: the default model, "
                        "trained into the cache on first use)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")  # fmt: skip
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"],
                   help="inference engine (onnx needs `mnistkit export` first)")  # fmt: skip
    p.add_argument("--max-bytes", type=int, default=2_000_000,
                   help="largest request body in bytes (default 2000000)")  # fmt: skip
    p.add_argument("--max-pixels", type=int, default=25_000_000,
                   help="largest image, width x height (default 25000000)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds a request may take to arrive and be answered (default 10)")  # fmt: skip
    p.add_argument("--max-batch", type=int, default=64,
                   help="most requests answered by one forward pass (default 64)")  # fmt: skip
    # Each connection holds a file descriptor; 1,024 is a common per-process limit.
    p.add_argument("--max-connections", type=int, default=200,
                   help="open connections beyond which requests get 503 (default 200)")  # fmt: skip
    p.add_argument("--allowed-hosts", metavar="HOSTS",
                   help="comma-separated Host names to answer, e.g. digits.example.org or "
                        "*.example.org (default any); set it when binding to 0.0.0.0")  # fmt: skip
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from mnistkit.serve import create_app, require_serve_deps

    require_serve_deps()
    for name in ("max_bytes", "max_pixels", "max_batch", "max_connections"):
        if getattr(args, name) < 1:
            raise MnistkitError(f"--{name.replace('_', '-')} must be at least 1.")
    if not 0 < args.timeout < math.inf:
        raise MnistkitError("--timeout must be a positive number of seconds.")
    if not 0 <= args.port <= 65535:
        raise MnistkitError(f"--port {args.port} is not a TCP port (0..65535).")
    hosts = None
    if args.allowed_hosts is not None:
        hosts = [h.strip() for h in args.allowed_hosts.split(",") if h.strip()]
        bad = [h for h in hosts if "*" in h[1:] or (h[0] == "*" and h != "*" and h[1] != ".")]
        if not hosts or bad:
            raise MnistkitError(f"--allowed-hosts takes names like digits.example.org or "
                                f"*.example.org, not {args.allowed_hosts!r}.")  # fmt: skip

    from mnistkit.cli.predict_cmds import load_classifier
    from mnistkit.serve import server

    sock = server.bind(args.host, args.port)  # a port in use: one line, before the model loads
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    clf = load_classifier(args, args.run_dir, max_bytes=args.max_bytes, max_pixels=args.max_pixels)
    app = create_app(
        clf,
        max_bytes=args.max_bytes,
        max_pixels=args.max_pixels,
        timeout_s=args.timeout,
        max_batch=args.max_batch,
        allowed_hosts=hosts,
    )
    info = clf.info
    acc = info.get("test_accuracy")
    acc_text = f", test accuracy {acc:.2%}" if isinstance(acc, float) else ""
    port = sock.getsockname()[1]  # --port 0: the one the system chose
    log(args, f"serving {info['run_dir']} ({info.get('recipe', '?')}{acc_text}, {args.backend})")
    log(args, f"open http://{_url_host(args.host)}:{port}/ to draw digits; Ctrl+C stops")
    server.run(app, sock, head_timeout=args.timeout, max_connections=args.max_connections,
               quiet=quiet)  # fmt: skip
    return 0


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
