"""``mnistkit serve [RUN_DIR]``: the HTTP API and drawing page for one trained run (default:
the default model, trained into the cache on first use)."""

from __future__ import annotations

import argparse
import logging

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
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from mnistkit.serve import create_app, require_serve_deps

    require_serve_deps()
    for name in ("max_bytes", "max_pixels", "max_batch"):
        if getattr(args, name) < 1:
            raise MnistkitError(f"--{name.replace('_', '-')} must be at least 1.")
    if args.timeout <= 0:
        raise MnistkitError("--timeout must be more than 0 seconds.")
    if not 0 <= args.port <= 65535:
        raise MnistkitError(f"--port {args.port} is not a TCP port (0..65535).")

    import uvicorn

    from mnistkit.cli.predict_cmds import load_classifier

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
    )
    info = clf.info
    acc = info.get("test_accuracy")
    acc_text = f", test accuracy {acc:.2%}" if isinstance(acc, float) else ""
    log(args, f"serving {info['run_dir']} ({info.get('recipe', '?')}{acc_text}, {args.backend})")
    log(args, f"open http://{_url_host(args.host)}:{args.port}/ to draw digits; Ctrl+C stops")
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning" if quiet else "info",
        access_log=not quiet,
        timeout_keep_alive=5,
    )
    return 0


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
