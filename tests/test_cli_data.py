"""`mnistkit data ...` as a user runs it: real MNIST, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

# MNIST's class histograms (LeCun's files; also what Keras's mnist.load_data() gives).
TRAIN_HISTOGRAM = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def mnistkit(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "mnistkit", *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.mnist
def test_real_mnist_histogram(mnist):
    (xtr, ytr), (xte, yte) = mnist
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert xtr.dtype == "uint8" and ytr.dtype == "uint8"
    assert list(map(int, __import__("numpy").bincount(ytr))) == TRAIN_HISTOGRAM
    assert list(map(int, __import__("numpy").bincount(yte))) == TEST_HISTOGRAM


@pytest.mark.mnist
def test_fetch_and_info(mnist):
    done = mnistkit("data", "fetch")
    assert done.returncode == 0, done.stderr
    assert "60000 train + 10000 test images, verified" in done.stdout
    done = mnistkit("data", "info", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["train"]["histogram"] == TRAIN_HISTOGRAM
    assert info["test"]["histogram"] == TEST_HISTOGRAM
    assert info["source"].startswith("cache")
    rows = [line.split() for line in mnistkit("data", "info").stdout.splitlines()]
    assert ["0", "5923", "980"] in rows and ["9", "5949", "1009"] in rows


@pytest.mark.mnist
def test_show_writes_a_grid(mnist, tmp_path):
    out = tmp_path / "grid.png"
    done = mnistkit("data", "show", "--split", "test", "--n", "16", "--out", str(out))
    assert done.returncode == 0, done.stderr
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 300


def test_bad_data_dir_exits_2_with_one_line(tmp_path, tiny_idx_dir):
    folder, raw = tiny_idx_dir  # synthetic files: they fail MNIST's checksums
    done = mnistkit("data", "info", "--data-dir", str(folder),
                    env={"MNISTKIT_CACHE": str(tmp_path / "c")})  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "fails its SHA-256 check" in lines[0] and str(folder) in lines[0]
    assert not (tmp_path / "c" / "mnist").exists() or not any(
        (tmp_path / "c" / "mnist").glob("*ubyte")
    )


def test_truncated_file_in_data_dir(tmp_path, tiny_idx_dir):
    folder, raw = tiny_idx_dir
    victim = folder / "t10k-images-idx3-ubyte"
    victim.write_bytes(victim.read_bytes()[:1000])
    done = mnistkit("data", "fetch", "--data-dir", str(folder))
    assert done.returncode == 2
    assert "t10k-images-idx3-ubyte is truncated" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_no_source_fails_fast_with_advice(tmp_path):
    """No mirror, no npm: one line listing what was tried, pointing at --data-dir."""
    done = mnistkit("data", "fetch", "--quiet", "--cache-dir", str(tmp_path),
                    env={"PATH": "/nonexistent", "HTTPS_PROXY": "http://127.0.0.1:9",
                         "MNISTKIT_TIMEOUT": "2"})  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "could not get mnist from any source" in line and "--data-dir" in line


@pytest.mark.mnist
def test_show_rejects_bad_n(mnist, tmp_path):
    done = mnistkit("data", "show", "--n", "0", "--out", str(tmp_path / "x.png"))
    assert done.returncode == 2 and "--n must be at least 1" in done.stderr
    assert not (tmp_path / "x.png").exists()


def test_missing_data_dir(tmp_path):
    done = mnistkit("data", "info", "--data-dir", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_help_for_every_data_command():
    for cmd in ([], ["data"], ["data", "fetch"], ["data", "info"], ["data", "show"]):
        done = mnistkit(*cmd, "--help")
        assert done.returncode == 0 and "usage: mnistkit" in done.stdout
