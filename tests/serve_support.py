"""Shared by the service tests: one real trained run per test session, and a real server.

The run is ``seed-convnet`` trained for one epoch on real MNIST (about 98.5 % test accuracy):
the service tests are about serving a real model, so they use one, trained once per session
into pytest's session temp folder whichever test module asks first.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
RECIPE = "seed-convnet"


def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory, trained on first use in this session.

    Set ``MNISTKIT_TEST_SERVE_RUN`` to a run directory to reuse one (while working on the
    service: training takes minutes on a small machine).
    """
    import mnistkit

    if os.environ.get("MNISTKIT_TEST_SERVE_RUN"):
        return Path(os.environ["MNISTKIT_TEST_SERVE_RUN"])
    run = tmp_path_factory.getbasetemp() / f"serve-{RECIPE}-1epoch"
    with FileLock(str(run) + ".lock"):
        if not (run / "metrics.json").exists():
            mnistkit.train(RECIPE, out=run, epochs=1, quiet=True)  # type: ignore[attr-defined]
    return run


def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained in a second on synthetic data (``conftest.make_arrays``), with its
    ``model.onnx``: for tests about processes and backends, where the model's skill is moot."""
    from conftest import make_arrays, tiny_dataset, write_idx_dir

    from mnistkit import data
    from mnistkit.infer.export import to_onnx
    from mnistkit.training.runner import train

    run = tmp_path_factory.getbasetemp() / "serve-tiny"
    with FileLock(str(run) + ".lock"):
        if not (run / "model.onnx").exists():
            arrays = make_arrays()
            folder = tmp_path_factory.mktemp("tiny-idx")
            raw = write_idx_dir(folder, arrays)
            with pytest.MonkeyPatch.context() as mp:
                mp.setitem(data.DATASETS, "tiny", tiny_dataset(raw))
                train("seed-dense512", out=run, epochs=1, dataset="tiny", data_dir=folder,
                      device="cpu", quiet=True)  # fmt: skip
            assert to_onnx(run, check_images=arrays[1][0]).ok
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(run: Path, *options: str) -> Iterator[str]:
    """``mnistkit serve RUN`` as a subprocess on 127.0.0.1 and a free port; yields its URL."""
    port = free_port()
    log = (run.parent / f"serve-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnistkit", "serve", str(run), "--port", str(port), *options],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # torch import + model load on a busy 2-core machine
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mnistkit serve exited: {Path(log.name).read_text()}")
            try:
                if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mnistkit serve did not start: {Path(log.name).read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
