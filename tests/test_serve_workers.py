"""``mnistkit serve --workers N`` and ``--backend``: several processes answer on one port, a
dead one is replaced, SIGTERM stops them all, and ONNX Runtime answers as torch does.

The model is a run trained in a second on synthetic data: these tests are about processes and
backends, not about reading digits. No test here asserts on time.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")
with warnings.catch_warnings():  # Starlette asks for httpx2; httpx is what we have
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient  # noqa: E402
from serve_support import free_port, running_server, tiny_run  # noqa: E402

from mnistkit.cli import main  # noqa: E402
from mnistkit.infer.predict import Classifier  # noqa: E402
from mnistkit.serve import create_app  # noqa: E402
from mnistkit.serve.workers import restart_delay  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory)


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def a_digit() -> bytes:
    """A bar on noise, as the synthetic training images are, drawn large as a person would."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 40, size=(112, 112), dtype=np.uint8)
    image[40:48, 16:96] = 255
    return png(image)


def pids_seen(url: str, want: int, tries: int = 200) -> set[int]:
    """Worker pids answering /api/health on fresh connections, until ``want`` are seen."""
    seen: set[int] = set()
    for _ in range(tries):
        seen.add(httpx.get(url + "/api/health", timeout=10).json()["pid"])
        if len(seen) >= want:
            break
    return seen


def kill_worker(pid: int) -> None:
    """SIGKILL a worker and wait until the supervisor has reaped it: its socket is closed from
    then on. (A connection the kernel handed that socket just before the kill is reset, as
    the requests a dying worker was answering are lost.)"""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_both_answer_and_stop_together(run, capsys):
    with running_server(run, "--workers", "2") as url:
        # Each worker has a socket of its own on the port (SO_REUSEPORT), yet a second server
        # is refused the port, as it is by a single-process one.
        port = str(urlsplit(url).port)
        assert main(["serve", str(run), "--port", port, "--workers", "2", "--quiet"]) == 2
        assert "already in use" in capsys.readouterr().err
        pids = pids_seen(url, 2)
        assert len(pids) == 2, pids
        for _ in range(10):  # predictions too, whichever worker takes them
            r = httpx.post(url + "/api/predict", content=a_digit(),
                           headers={"Content-Type": "image/png"}, timeout=30)  # fmt: skip
            assert r.status_code == 200 and isinstance(r.json()["number"], str), r.text
        assert httpx.get(url + "/api/health").json()["model"]["backend"] == "onnx"
    # running_server sent SIGTERM to the parent: the workers went with it.
    deadline = time.monotonic() + 15
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in pids)


def test_a_killed_worker_is_replaced_and_the_log_says_so(run):
    with running_server(run, "--workers", "2") as url:
        before = pids_seen(url, 2)
        victim = min(before)
        kill_worker(victim)
        # The other worker answers meanwhile; a new pid shows up once the replacement is in.
        deadline = time.monotonic() + 60
        seen: set[int] = set()
        while time.monotonic() < deadline:
            seen |= pids_seen(url, 1)
            if seen - before:
                break
            time.sleep(0.1)
        new = seen - before
        assert victim not in seen and len(new) == 1, (before, seen)
        assert len(pids_seen(url, 2) | seen) >= 2
        port = urlsplit(url).port
        log = (run.parent / f"serve-{port}.log").read_text()
        assert f"server worker {victim} exited (killed by SIGKILL); starting another" in log


def test_a_replacement_that_cannot_load_is_retried_while_the_other_worker_answers(run, tmp_path):
    own = Path(shutil.copytree(run, tmp_path / "run"))
    with running_server(own, "--workers", "2") as url:
        before = pids_seen(url, 2)
        (own / "model.onnx").rename(own / "model.onnx.away")  # replacements cannot load
        victim = min(before)
        kill_worker(victim)
        log_path = own.parent / f"serve-{urlsplit(url).port}.log"
        deadline = time.monotonic() + 120  # a spawn imports torch: slow on a busy machine
        while "could not start" not in log_path.read_text() and time.monotonic() < deadline:
            assert pids_seen(url, 1) <= before  # the survivor answers all the while
            time.sleep(0.2)
        assert "model.onnx is missing" in log_path.read_text()
        assert "trying again in 2 s" in log_path.read_text()  # the delay doubled after 1 s
        (own / "model.onnx.away").rename(own / "model.onnx")
        seen: set[int] = set()
        deadline = time.monotonic() + 120
        while not seen - before and time.monotonic() < deadline:
            seen |= pids_seen(url, 1)
            time.sleep(0.2)
        assert len(seen - before) == 1 and victim not in seen, (before, seen)


def test_the_server_stops_with_exit_1_when_no_worker_can_be_started(run, tmp_path):
    own = Path(shutil.copytree(run, tmp_path / "run"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnistkit", "serve", str(own), "--port", str(port),
         "--workers", "2", "--backend", "onnx"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        pids = pids_seen_when_up(url, proc)
        (own / "model.onnx").unlink()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mnistkit: error: every server worker has stopped and 3 "), err
    assert "Traceback" not in err


def pids_seen_when_up(url: str, proc: subprocess.Popen[str]) -> set[int]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            return pids_seen(url, 2)
        except httpx.TransportError:
            time.sleep(0.3)
    raise AssertionError("the server did not start")


@pytest.mark.parametrize(
    "previous, uptime, delay",
    [(0.0, 3600.0, 0.0), (8.0, 31.0, 0.0), (0.0, 5.0, 1.0), (1.0, 0.0, 2.0), (16.0, 0.0, 30.0),
     (30.0, 2.0, 30.0)],
)  # fmt: skip
def test_restart_delay_doubles_for_a_crash_loop_and_resets_after_steady_work(
    previous, uptime, delay
):
    assert restart_delay(previous, uptime) == delay


def test_onnx_serving_answers_what_torch_answers(run):
    body = a_digit()
    answers = {}
    for backend in ("torch", "onnx"):
        clf = Classifier.load(run, backend=backend, threads=1)
        with TestClient(create_app(clf)) as client:
            r = client.post("/api/predict", content=body, headers={"Content-Type": "image/png"})
            assert r.status_code == 200, r.text
            answers[backend] = r.json()
            assert client.get("/api/health").json()["model"]["backend"] == backend
    onnx, torch_ = answers["onnx"], answers["torch"]
    assert torch_["digits"], torch_  # the bar is read as at least one digit
    assert onnx["number"] == torch_["number"] and len(onnx["digits"]) == len(torch_["digits"])
    for a, b in zip(onnx["digits"], torch_["digits"], strict=True):
        assert a["label"] == b["label"] and a["bbox"] == b["bbox"] and a["input28"] == b["input28"]
        assert abs(a["p"] - b["p"]) < 1e-5
    assert onnx["label"] == torch_["label"] and onnx["input28"] == torch_["input28"]
    if torch_["probabilities"] is not None:  # exactly one digit found
        assert np.allclose(onnx["probabilities"], torch_["probabilities"], atol=1e-5)


def test_the_backend_defaults_to_onnx_only_where_the_run_has_model_onnx(run, tmp_path, capsys):
    from mnistkit.cli import build_parser
    from mnistkit.cli.serve_cmds import _choose_backend

    def choose(run_dir: Path, *options: str) -> str:
        return _choose_backend(build_parser().parse_args(["serve", str(run_dir), *options]))

    assert choose(run) == "onnx"
    assert choose(run, "--backend", "torch") == "torch"
    bare = tmp_path / "bare"
    bare.mkdir()
    assert choose(bare) == "torch"
    assert "has no model.onnx" in capsys.readouterr().err
    stale = tmp_path / "stale"  # retrained after its export: other weights
    stale.mkdir()
    for name in ("config.json", "metrics.json", "model.onnx"):
        (stale / name).write_bytes((run / name).read_bytes())
    weights = bytearray((run / "model.safetensors").read_bytes())
    weights[-1] ^= 1
    (stale / "model.safetensors").write_bytes(bytes(weights))
    assert choose(stale) == "torch"
    assert "exported from other weights" in capsys.readouterr().err


def test_a_worker_that_cannot_load_is_one_line_and_exit_2(run, tmp_path, capsys):
    bare = tmp_path / "no-onnx"
    bare.mkdir()
    for name in ("config.json", "metrics.json", "model.safetensors"):
        (bare / name).write_bytes((run / name).read_bytes())
    code = main(["serve", str(bare), "--port", "0", "--workers", "2", "--backend", "onnx",
                 "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "model.onnx is missing" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_workers_must_be_positive(capsys, workers):
    assert main(["serve", "--workers", workers]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
