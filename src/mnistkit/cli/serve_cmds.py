"""``mnistkit serve [RUN_DIR]``: the HTTP API and drawing page for one trained run (default:
the default model, trained into the cache on first use)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from mnistkit.cli.common import log
from mnistkit.errors import MnistkitError, ServerFailed
from mnistkit.serve.workers import default_workers


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    help = "serve a run over HTTP: a JSON API and a page to draw digits on"
    p = sub.add_parser("serve", help=help, description=help, parents=[common])
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?",
                   help="run directory written by `mnistkit train` (default: the default model, "
                        "trained into the cache on first use)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")  # fmt: skip
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--backend", choices=["torch", "onnx"],
                   help="inference engine (default onnx when onnxruntime is installed and the "
                        "run has an up-to-date model.onnx from `mnistkit export`, else "
                        "torch)")  # fmt: skip
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="server processes, each with its own model and batcher (default: the "
                        f"cores this machine gives the process, here {default_workers()})")  # fmt: skip
    p.add_argument("--max-bytes", type=int, default=2_000_000,
                   help="largest request body in bytes (default 2000000)")  # fmt: skip
    p.add_argument("--max-pixels", type=int, default=25_000_000,
                   help="largest image, width x height (default 25000000)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds a request may take to arrive and be answered (default 10)")  # fmt: skip
    p.add_argument("--max-batch", type=int, default=64,
                   help="most requests taken together by the inference thread (default 64)")  # fmt: skip
    # Each connection holds a file descriptor; 1,024 is a common per-process limit.
    p.add_argument("--max-connections", type=int, default=200,
                   help="open connections per worker beyond which requests get 503 "
                        "(default 200)")  # fmt: skip
    p.add_argument("--allowed-hosts", metavar="HOSTS",
                   help="comma-separated Host names to answer, e.g. digits.example.org or "
                        "*.example.org (default any); set it when binding to 0.0.0.0")  # fmt: skip
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from mnistkit.serve import require_serve_deps

    require_serve_deps()
    for name in ("max_bytes", "max_pixels", "max_batch", "max_connections", "workers"):
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

    from mnistkit.serve import server
    from mnistkit.serve.workers import (
        ServeSettings,
        Supervisor,
        build_app,
        run_app,
        setup_logging,
        threads_per_worker,
    )

    # A port in use: one line, before the model loads.
    if args.workers == 1:
        sock = server.bind(args.host, args.port)
    else:
        sock = server.reserve(args.host, args.port)
    try:
        quiet = getattr(args, "quiet", False)
        setup_logging(quiet, args.workers)
        backend = _choose_backend(args)
        run_dir = args.run_dir
        if run_dir is None:  # trained here once, not by every worker at once
            from mnistkit.infer.default_model import ensure_default_model

            run_dir = str(ensure_default_model(
                cache_dir=getattr(args, "cache_dir", None), data_dir=getattr(args, "data_dir", None),
                onnx=backend == "onnx", log=None if quiet else lambda m: log(args, m),
            ))  # fmt: skip
        settings = ServeSettings(
            run_dir=run_dir, backend=backend, max_bytes=args.max_bytes, max_pixels=args.max_pixels,
            timeout=args.timeout, max_batch=args.max_batch, max_connections=args.max_connections,
            allowed_hosts=tuple(hosts) if hosts is not None else None, quiet=quiet,
            threads=threads_per_worker(args.workers),
        )  # fmt: skip
        port = sock.getsockname()[1]  # --port 0: the one the system chose

        def announce(info: dict[str, Any]) -> None:
            acc = info.get("test_accuracy")
            acc_text = f", test accuracy {acc:.2%}" if isinstance(acc, float) else ""
            procs = f", {args.workers} workers" if args.workers > 1 else ""
            log(args, f"serving {info['run_dir']} ({info.get('recipe', '?')}{acc_text}, "
                      f"{backend}{procs})")  # fmt: skip
            log(args, f"open http://{_url_host(args.host)}:{port}/ to draw digits; Ctrl+C stops")

        if args.workers == 1:
            app, info = build_app(settings)
            announce(info)
            run_app(app, sock, settings)
        else:
            try:
                Supervisor(sock, args.workers, settings).run(on_ready=announce)
            except ServerFailed as e:  # not the user's doing: exit 1, as a crash would
                print(f"mnistkit: error: {e}", file=sys.stderr)
                return 1
    finally:  # a failed start leaves no listening socket behind
        sock.close()
    return 0


def _choose_backend(args: argparse.Namespace) -> str:
    """--backend, or onnx where onnxruntime and the run's model.onnx are at hand."""
    import importlib.util

    from mnistkit.infer.export import ONNX_FILE

    if args.backend is not None:
        return str(args.backend)
    if importlib.util.find_spec("onnxruntime") is None:
        return "torch"
    if args.run_dir is None and importlib.util.find_spec("onnx") is None:
        return "torch"  # the default model's model.onnx would be exported with it
    if args.run_dir is None:
        return "onnx"
    if not (Path(args.run_dir) / ONNX_FILE).is_file():
        log(args, f"serving with torch: {args.run_dir} has no {ONNX_FILE} "
                  f"(`mnistkit export {args.run_dir}` makes one for ONNX Runtime)")  # fmt: skip
        return "torch"
    from mnistkit.infer.predict import Classifier

    try:  # a model.onnx left from other weights (the run retrained since): torch, and say so
        Classifier.load(args.run_dir, backend="onnx", threads=1)
    except MnistkitError as e:
        log(args, f"serving with torch: {e}")
        return "torch"
    return "onnx"


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
