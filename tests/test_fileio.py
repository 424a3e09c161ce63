"""Atomic writes (mnistkit.fileio): what they leave on disk."""

from __future__ import annotations

import os
import stat

import pytest

from mnistkit import data
from mnistkit.fileio import write_atomic
from mnistkit.training.runner import train


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_follow_the_umask(tiny_registered, tmp_path, umask):
    """Every file mnistkit writes gets the mode `open()` would give it, not mkstemp's 0600:
    a run directory, the data cache, any single file (a PNG, an export)."""
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "one.png", b"x")
        data.load("tiny", data_dir=tiny_registered, cache_dir=tmp_path / "cache", log=print)
        train("seed-dense512", out=tmp_path / "run", epochs=1, dataset="tiny", quiet=True,
              data_dir=tiny_registered, cache_dir=tmp_path / "cache", device="cpu")  # fmt: skip
    finally:
        os.umask(old)
    files = [tmp_path / "one.png", *(tmp_path / "cache" / "tiny").iterdir(),
             *(tmp_path / "run").iterdir()]  # fmt: skip
    assert len(files) > 10
    modes = {p.relative_to(tmp_path).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert modes == {name: oct(0o666 & ~umask) for name in modes}
