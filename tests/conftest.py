"""Shared fixtures: tiny synthetic IDX data sets for fast unit tests, real MNIST for claims
about MNIST.

Real MNIST goes into a cache inside the repository (``.cache/``, git-ignored) so repeated test
runs fetch it once; set ``MNISTKIT_TEST_CACHE`` to use another folder. Subprocesses started by
tests inherit it through the environment.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The test sets' renderers live with the benchmarks that report on them (digit_photos,
# digit_kinds); tests draw small sets with them.
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ["MNISTKIT_CACHE"] = os.environ.get(
    "MNISTKIT_TEST_CACHE", str(ROOT / ".cache" / "mnistkit")
)
os.environ.pop("MNISTKIT_DATA_DIR", None)
os.environ.setdefault("MNISTKIT_TIMEOUT", "3")

from mnistkit import data  # noqa: E402  (after the environment is set)
from mnistkit.data.idx import encode_idx  # noqa: E402


def make_arrays(n_train: int = 200, n_test: int = 50, seed: int = 0):
    """Synthetic digit-like data: class k is a bright bar at row 2k+4, with noise. Learnable."""
    rng = np.random.default_rng(seed)

    def split(n: int):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k + 4 : 2 * k + 6, 4:24] = 255
        return images, labels

    return split(n_train), split(n_test)


def write_idx_dir(folder: Path, arrays, gz: bool = False) -> dict[str, bytes]:
    """Write arrays as the four IDX files; returns {raw name: raw bytes}."""
    (xtr, ytr), (xte, yte) = arrays
    raw = {
        "train-images-idx3-ubyte": encode_idx(xtr),
        "train-labels-idx1-ubyte": encode_idx(ytr),
        "t10k-images-idx3-ubyte": encode_idx(xte),
        "t10k-labels-idx1-ubyte": encode_idx(yte),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in raw.items():
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(blob, mtime=0))
        else:
            (folder / name).write_bytes(blob)
    return raw


def tiny_dataset(raw: dict[str, bytes], **changes) -> data.Dataset:
    """A Dataset whose checksums are those of the given synthetic files."""
    gz = {
        n: "sha256:" + hashlib.sha256(gzip.compress(b, mtime=0)).hexdigest() for n, b in raw.items()
    }
    ds = data.Dataset(
        name="tiny",
        raw_sha256={n: hashlib.sha256(b).hexdigest() for n, b in raw.items()},
        gz_hashes=gz,
    )
    return replace(ds, **changes)


@pytest.fixture
def tiny_arrays():
    return make_arrays()


@pytest.fixture
def tiny_idx_dir(tmp_path: Path, tiny_arrays):
    """A folder with four raw synthetic IDX files; yields (folder, raw bytes by name)."""
    raw = write_idx_dir(tmp_path / "idx", tiny_arrays)
    return tmp_path / "idx", raw


@pytest.fixture
def tiny_registered(monkeypatch, tmp_path: Path, tiny_arrays):
    """Register the synthetic set as data set "tiny" with a local data dir; returns its folder.

    Code under test can then call ``data.load("tiny", data_dir=folder)``.
    """
    raw = write_idx_dir(tmp_path / "tiny-idx", tiny_arrays)
    monkeypatch.setitem(data.DATASETS, "tiny", tiny_dataset(raw))
    return tmp_path / "tiny-idx"


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST, verified: ((x_train, y_train), (x_test, y_test)) uint8 numpy arrays."""
    return data.load("mnist", log=lambda m: None).arrays


@pytest.fixture(scope="session")
def fast_run(tmp_path_factory, mnist):
    """``fast`` trained once for the session on real MNIST (seed 0, two threads, as the
    recipe's figures are measured): the recipe's claims are checked on this one run."""
    from mnistkit.training.runner import train

    out = tmp_path_factory.mktemp("fast") / "run"
    return train("fast", out=out, seed=0, device="cpu", threads=2, quiet=True)
