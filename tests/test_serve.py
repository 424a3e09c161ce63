"""The HTTP service: answers for good images, every refusal, micro-batching, slow clients.

API tests run the app in-process with FastAPI's test client around a real trained classifier;
the last tests start a real ``mnistkit serve`` to check what only a socket can show.
"""

from __future__ import annotations

import io
import logging
import socket
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
with warnings.catch_warnings():  # Starlette asks for httpx2; httpx is what we have
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from serve_support import running_server, trained_run  # noqa: E402

from mnistkit.serve import create_app  # noqa: E402

pytestmark = [pytest.mark.mnist, pytest.mark.slow]

MAX_BYTES = 100_000
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def clf(run_dir):
    from mnistkit.infer.predict import Classifier

    return Classifier.load(run_dir)


@pytest.fixture(scope="module")
def client(clf):
    app = create_app(clf, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, timeout_s=30)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def digits(mnist):
    """Five real MNIST test digits: (uint8 28x28 images, labels)."""
    _, (x_test, y_test) = mnist
    return x_test[:5], y_test[:5]


def encode(image: np.ndarray | Image.Image, fmt: str) -> bytes:
    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels in a few dozen bytes (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def post_raw(client: TestClient, body: bytes, ctype: str = "image/png"):
    return client.post("/api/predict", content=body, headers={"content-type": ctype})


def assert_good(client: TestClient) -> None:
    """The server still answers a normal request."""
    r = post_raw(client, encode(np.full((28, 28), 0, np.uint8), "PNG"))
    assert r.status_code == 200, r.text


# ---- good requests -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("how", ["multipart", "raw"])
def test_predict_answers_like_the_library(client, clf, digits, fmt, how):
    images, labels = digits
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    for image, label in zip(images, labels, strict=True):
        blob = encode(image, fmt)
        if how == "multipart":
            r = client.post("/api/predict", files={"image": (f"d.{fmt.lower()}", blob, mime)})
        else:
            r = post_raw(client, blob, mime)
        assert r.status_code == 200, r.text
        body = r.json()
        ref = clf.predict(blob)  # the reference: the same bytes through the Python API
        assert body["label"] == ref.label == int(label)
        assert body["not_digit"] == ref.not_digit
        np.testing.assert_allclose(
            body["probabilities"], ref.probabilities, atol=1e-6
        )  # 6 decimals
        assert sum(body["probabilities"]) == pytest.approx(1, abs=1e-4)
        assert [t["label"] for t in body["top"]] == [k for k, _ in ref.top[:3]]
        assert body["top"][0]["label"] == body["label"]
        seen = np.array(body["input28"])
        assert seen.shape == (28, 28) and seen.min() >= 0 and seen.max() <= 1
        np.testing.assert_allclose(seen, ref.input28, atol=6e-4)  # rounded to 3 decimals


def test_untyped_and_octet_stream_bodies_are_sniffed(client, digits):
    image, label = digits[0][0], int(digits[1][0])
    for ctype in ("application/octet-stream", ""):
        r = post_raw(client, encode(image, "PNG"), ctype)
        assert r.status_code == 200, r.text
        assert r.json()["label"] == label


def test_health_names_the_model(client, run_dir):
    import json

    r = client.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert body["model"]["recipe"] == metrics["recipe"]
    assert body["model"]["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert body["model"]["run_dir"] == run_dir.name  # not where it lies on the server's disk


def test_page_and_its_assets_are_served_offline(client):
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        r = client.get(asset)
        assert r.status_code == 200 and kind in r.headers["content-type"]
        # No CDN, no fonts from elsewhere: everything the page needs comes from this server.
        assert "http://" not in r.text and "https://" not in r.text
    assert "http://" not in page.text and "https://" not in page.text


# ---- bad requests: each refused with JSON and one log line, and the next one served -----


def _multipart(body: bytes, boundary: str = "b0undary") -> tuple[bytes, str]:
    return body, f"multipart/form-data; boundary={boundary}"


def _bad_requests():
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1000), dtype=np.uint8)
    part = (
        b'--b0undary\r\nContent-Disposition: form-data; name="image"; filename="d.png"\r\n'
        b"Content-Type: image/png\r\n\r\n"
    )
    return {
        "not an image": (400, b"this is plain text, not a picture", "image/png"),
        "empty body": (400, b"", "image/png"),
        "truncated png": (400, encode(np.zeros((28, 28), np.uint8), "PNG")[:30], "image/png"),
        "text content type": (415, b"hello", "text/plain"),
        "json content type": (415, b'{"image": 1}', "application/json"),
        "gif bytes": (415, encode(np.zeros((28, 28), np.uint8), "GIF"), "image/png"),
        "tiff bytes": (415, encode(np.zeros((28, 28), np.uint8), "TIFF"), "image/png"),
        "over the size limit": (413, encode(noise, "PNG"), "image/png"),
        "over the pixel limit": (
            413,
            encode(np.zeros((1001, 1000), np.uint8), "PNG"),  # 1,001,000 px in ~1 kB
            "image/png",
        ),
        "decompression bomb": (413, png_header_only(100_000, 100_000), "image/png"),
        "multipart without boundary": (400, part, "multipart/form-data"),
        "multipart cut short": (400, *_multipart(part + b"\x89PNG")),
        "multipart garbage": (400, *_multipart(b"\x00\xff garbage")),
        "multipart without image field": (
            400,
            *_multipart(
                b'--b0undary\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--b0undary--\r\n'
            ),
        ),
        "multipart empty image": (400, *_multipart(part + b"\r\n--b0undary--\r\n")),
    }


BAD = _bad_requests()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_is_refused_with_json_and_logged(client, caplog, case):
    status, body, ctype = BAD[case]
    with caplog.at_level(logging.WARNING, logger="mnistkit.serve"):
        r = post_raw(client, body, ctype)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    message = r.json()["error"]
    assert isinstance(message, str) and message.endswith(".") and "\n" not in message
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "mnistkit.serve"]
    assert len(lines) == 1 and f"-> {status}" in lines[0] and "\n" not in lines[0]
    assert_good(client)


def test_size_limit_counts_the_body_not_the_header(client):
    """A client that declares no length (chunked) is still cut off at the limit."""

    def chunks():
        for _ in range(MAX_BYTES // 1000 + 5):
            yield b"\0" * 1000

    r = client.post("/api/predict", content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413
    assert "100,000 bytes" in r.json()["error"]
    assert_good(client)


def test_unknown_route_is_json(client):
    r = client.get("/api/nope")
    assert r.status_code == 404 and "error" in r.json()


# ---- micro-batching ------------------------------------------------------------------


def test_concurrent_requests_get_their_own_answers(clf, digits):
    import anyio
    import httpx

    images, labels = digits
    app = create_app(clf)
    blobs = [encode(im, "PNG") for im in images] * 4

    async def main():
        results: list = [None] * len(blobs)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:

            async def one(i):
                r = await c.post(
                    "/api/predict", content=blobs[i], headers={"content-type": "image/png"}
                )
                results[i] = r

            async with anyio.create_task_group() as tg:
                for i in range(len(blobs)):
                    tg.start_soon(one, i)
        return results

    results = anyio.run(main)
    assert [r.status_code for r in results] == [200] * len(blobs)
    assert [r.json()["label"] for r in results] == [int(y) for y in labels] * 4
    app.state.batcher.close()


# ---- a real server on a socket -------------------------------------------------------


@pytest.fixture(scope="module")
def server(run_dir):
    with running_server(run_dir, "--timeout", "3", "--max-bytes", str(MAX_BYTES)) as url:
        yield url


def _raw_request(url: str, head: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(head)
    return s


def _read_status(s: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def test_slow_client_does_not_block_others_and_times_out(server, digits):
    import httpx

    # Declares 50 kB, sends 10 bytes, then nothing.
    slow = _raw_request(
        server,
        b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: 50000\r\n\r\n\x89PNG\r\n\x1a\n\0\0",
    )
    try:
        for image, label in zip(*digits, strict=True):
            r = httpx.post(server + "/api/predict", content=encode(image, "PNG"),
                           headers={"content-type": "image/png"}, timeout=30)  # fmt: skip
            assert r.status_code == 200 and r.json()["label"] == int(label)
        assert _read_status(slow) == 408  # after --timeout 3 s
    finally:
        slow.close()


def test_declared_oversize_body_is_refused_before_it_is_sent(server):
    s = _raw_request(
        server,
        b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: 1000000000\r\n\r\n",
    )
    try:
        assert _read_status(s) == 413  # the server did not wait for a gigabyte
    finally:
        s.close()


def test_a_bug_in_inference_is_a_json_500_and_the_server_goes_on(caplog):
    class Broken:
        info = {"recipe": "broken"}
        calls = 0

        def predict_batch(self, images):
            Broken.calls += 1
            if Broken.calls == 1:
                raise RuntimeError("boom")
            raise ValueError("still broken")

    with TestClient(create_app(Broken())) as c, caplog.at_level(logging.ERROR, "mnistkit.serve"):
        for _ in range(2):
            r = post_raw(c, encode(np.zeros((28, 28), np.uint8), "PNG"))
            assert r.status_code == 500 and "error" in r.json()
        assert c.get("/api/health").json()["status"] == "ok"
    assert any("boom" in (rec.exc_text or "") or rec.exc_info for rec in caplog.records)


def _closed_by_server(s: socket.socket, trickle: bytes, until: float) -> bytes | None:
    """Send ``trickle`` a byte every 0.3 s (then nothing), and stop sending once the server
    speaks, until the server closes the connection: what it sent before closing, or None if
    the connection was still open at ``until``."""
    import time

    s.settimeout(0.3)
    got, i = b"", 0
    while time.monotonic() < until:
        try:
            chunk = s.recv(4096)
        except TimeoutError:
            chunk = None
        except OSError:
            return got
        if chunk == b"":
            return got
        if chunk:
            got += chunk
        elif i < len(trickle) and not got:
            try:
                s.send(trickle[i : i + 1])
            except OSError:
                return got
            i += 1
    return None


def test_slow_heads_and_idle_connections_are_closed(server):
    """With --timeout 3, a client sending its request head a byte at a time gets a 408 and is
    closed, and so is one that sends nothing or sits idle after an answer, while other
    clients are answered; before, all of them stayed open as long as they liked."""
    import concurrent.futures
    import time

    import httpx

    host, port = server.removeprefix("http://").split(":")
    head = b"GET /api/health HTTP/1.1\r\nHost: x\r\nUser-Agent: one byte at a time\r\n\r\n"
    until = time.monotonic() + 20  # far beyond the 3 s deadline: a bound, not a measurement

    def client(kind: str) -> bytes | None:
        with socket.create_connection((host, int(port)), timeout=30) as s:
            if kind == "keep-alive":  # one request answered in full, then nothing
                s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while b"\r\n\r\n" not in answer:
                    answer += s.recv(65536)
                head_end = answer.index(b"\r\n\r\n") + 4
                length = int(answer.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(answer) < head_end + length:
                    answer += s.recv(65536)
                assert answer.startswith(b"HTTP/1.1 200")
            return _closed_by_server(s, head if kind == "slow" else b"", until)

    kinds = ["slow"] * 10 + ["idle"] * 5 + ["keep-alive"] * 5
    with concurrent.futures.ThreadPoolExecutor(len(kinds)) as pool:
        futures = [pool.submit(client, kind) for kind in kinds]
        assert httpx.get(server + "/api/health", timeout=30).status_code == 200
        results = [f.result() for f in futures]
    assert all(r is not None for r in results), results
    assert all(r.startswith(b"HTTP/1.1 408") for r in results[:10]), results[:10]
    assert all(r == b"" for r in results[10:]), results[10:]


def test_a_port_in_use_is_one_line_exit_2(run_dir):
    import subprocess
    import sys

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "mnistkit", "serve", str(run_dir), "--port",
                               str(port)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"mnistkit: error: port {port} on 127.0.0.1 is already in use (another server?); "
        f"choose another --port."
    ]


def test_allowed_hosts_and_the_connection_cap(run_dir):
    import httpx

    # One worker: the cap is per worker, and with two the idle connections would be shared.
    options = ["--allowed-hosts", "127.0.0.1, digits.example.org", "--max-connections", "4",
               "--workers", "1"]  # fmt: skip
    with running_server(run_dir, *options) as url:
        r = httpx.get(url + "/api/health", headers={"host": "evil.example"}, timeout=30)
        assert r.status_code == 400
        assert r.json() == {
            "error": "The Host 'evil.example' is not one this server answers to (--allowed-hosts)."
        }
        r = httpx.get(url + "/api/health", headers={"host": "digits.example.org"}, timeout=30)
        assert r.status_code == 200
        host, port = url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port)), timeout=30) for _ in range(4)]
        try:
            assert httpx.get(url + "/api/health", timeout=30).status_code == 503
        finally:
            for s in idle:
                s.close()
