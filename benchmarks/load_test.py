"""Load test for ``mnistkit serve``: N concurrent clients, a fixed number of requests.

Prints throughput, latency percentiles and the error count, with the machine it ran on. It only
talks to this machine (127.0.0.1, ::1 or localhost): a load test is not for other people's
servers. Either point it at a running server or let it start one for a run directory:

    .venv/bin/python benchmarks/load_test.py --run runs/fast                 # starts a server
    .venv/bin/python benchmarks/load_test.py --url http://127.0.0.1:8000     # one already up

Each request posts one real MNIST test digit as PNG (the first 200 of the test split, in turn).
A benchmark, not a test: it prints figures and fails only when requests fail.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
import numpy as np

LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost"}


def digits_as_png(n: int = 200) -> list[bytes]:
    from PIL import Image

    import mnistkit

    _, (x_test, _) = mnistkit.load_data()
    out = []
    for image in x_test[:n]:
        buf = io.BytesIO()
        Image.fromarray(np.asarray(image)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


async def load(
    url: str, bodies: list[bytes], clients: int, requests: int
) -> tuple[list[float], dict[str, int], float]:
    """Run the load; returns (latencies in seconds of the successful requests, errors by kind, wall time)."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    next_i = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal next_i
            while next_i < requests:
                i = next_i
                next_i += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post("/api/predict", content=bodies[i % len(bodies)],
                                          headers={"content-type": "image/png"})  # fmt: skip
                    ok = r.status_code == 200 and "label" in r.json()
                    kind = f"HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    ok, kind = False, type(e).__name__
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[kind] = errors.get(kind, 0) + 1

        # A short warm-up outside the figures: first requests pay for lazy start-up.
        for body in bodies[:5]:
            await client.post("/api/predict", content=body, headers={"content-type": "image/png"})
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - started
    return latencies, errors, wall


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores usable, {platform.system()} {platform.release()}, Python {platform.python_version()}"


@contextmanager
def server_for(run: str, extra: list[str]) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mnistkit", "serve", run, "--port", str(port), "--quiet", *extra]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                sys.exit(f"load_test: the server exited with status {proc.returncode}")
            try:
                if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                sys.exit("load_test: the server did not start within 120 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running server on this machine, e.g. http://127.0.0.1:8000")
    where.add_argument("--run", help="run directory: start `mnistkit serve RUN` on a free port")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    p.add_argument("--requests", type=int, default=2000, help="requests in all (default 2000)")
    p.add_argument("--serve-arg", action="append", default=[],
                   help="extra option for the started server, e.g. --serve-arg=--max-batch=32")  # fmt: skip
    args = p.parse_args(argv)
    if args.clients < 1 or args.requests < 1:
        p.error("--clients and --requests must be at least 1")
    if args.url and urlsplit(args.url).hostname not in LOCAL_HOSTS:
        p.error(f"--url must be on this machine ({', '.join(sorted(LOCAL_HOSTS))})")

    bodies = digits_as_png()
    with server_for(args.run, args.serve_arg) if args.run else _given(args.url) as url:
        latencies, errors, wall = asyncio.run(load(url, bodies, args.clients, args.requests))
        health = httpx.get(url + "/api/health", timeout=10).json()

    lat_ms = np.array(latencies) * 1000
    n_err = sum(errors.values())
    model = health.get("model", {})
    batching = health.get("batching", {})
    print(f"machine     {machine()}")
    print(f"server      {url}  model {model.get('recipe', '?')}")
    print(
        f"load        {args.clients} concurrent clients, {args.requests} requests, PNG 28x28 MNIST digits"
    )
    print(f"throughput  {args.requests / wall:.1f} requests/s ({wall:.2f} s in all)")
    if len(lat_ms):
        p50, p95, p99 = np.percentile(lat_ms, [50, 95, 99])
        print(
            f"latency     p50 {p50:.1f} ms  p95 {p95:.1f} ms  p99 {p99:.1f} ms  max {lat_ms.max():.1f} ms"
        )
    if batching.get("batches"):
        mean = batching["requests"] / batching["batches"]
        print(
            f"batching    {batching['batches']} forward passes, mean batch {mean:.1f}, largest {batching['largest_batch']}"
        )
    print(f"errors      {n_err}" + (f"  {errors}" if errors else ""))
    return 1 if n_err else 0


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url.rstrip("/")


if __name__ == "__main__":
    sys.exit(main())
