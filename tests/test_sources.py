"""Local sources (mnistkit.data.sources): decompression bombs in --data-dir cost almost nothing.

The bombs are real files, small on disk: a gzipped IDX file and a Keras mnist.npz whose
contents expand to gigabytes of zeros. They are loaded in a subprocess whose address space is
capped at 1 GiB above what it holds after its imports (an unbounded reader fails there instead
of taking the machine's memory), and which reports how far its resident memory rose above
where it stood (Linux's VmHWM after a reset) and the time it took.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import make_arrays, write_idx_dir

from mnistkit.data.idx import encode_idx
from mnistkit.errors import DataError

MIB = 2**20
CHILD = """
import json, resource, sys, time
from mnistkit import data
from mnistkit.errors import DataError

def status_kib(field):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1])

cap = (status_kib("VmSize") + 2**20) * 1024
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to what the process holds now
before = status_kib("VmRSS")
t0 = time.perf_counter()
try:
    data.load("mnist", data_dir=sys.argv[1], cache_dir=sys.argv[2], log=lambda m: None)
    outcome = "loaded"
except DataError as e:
    outcome = str(e)
seconds = time.perf_counter() - t0
peak = (status_kib("VmHWM") - before) / 1024
print(json.dumps({"outcome": outcome, "seconds": round(seconds, 4), "peak_mib": peak}))
"""


def deflate_zeros(prefix: bytes, n_mib: int) -> tuple[bytes, int, int]:
    """A raw deflate stream of ``prefix`` then ``n_mib`` MiB of zeros, in milliseconds.

    A full flush resets the compressor, so every MiB of zeros compresses to the same block
    (about 1 kB) and the stream is that block repeated. The CRC-32 of the zeros comes from
    the same fact: one MiB of zeros maps a CRC to the next by an affine map over GF(2)^32,
    read off 33 CRCs of one MiB.

    Returns:
        ``(deflate bytes, CRC-32, uncompressed size)``.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(MIB)) + c.flush(zlib.Z_FULL_FLUSH)
    zero_crc = zlib.crc32(bytes(MIB), 0)
    columns = [zlib.crc32(bytes(MIB), 1 << i) ^ zero_crc for i in range(32)]
    crc = zlib.crc32(prefix)
    for _ in range(n_mib):
        nxt = zero_crc
        for i in range(32):
            if crc >> i & 1:
                nxt ^= columns[i]
        crc = nxt
    return head + block * n_mib + c.flush(), crc, len(prefix) + n_mib * MIB


def test_deflate_zeros_is_what_it_says():
    stream, crc, size = deflate_zeros(b"head", 3)
    plain = zlib.decompress(stream, -15)
    assert plain == b"head" + bytes(3 * MIB) and size == len(plain)
    assert crc == zlib.crc32(plain)


def gzip_file(stream: bytes, crc: int, size: int) -> bytes:
    return (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + stream + struct.pack("<II", crc, size % 2**32)
    )


def zip_file(members: dict[str, tuple[bytes, int, int]]) -> bytes:
    """A zip archive of deflated members, by name: (deflate bytes, CRC-32, size)."""
    body, directory = b"", b""
    for name, (stream, crc, size) in members.items():
        n = name.encode()
        offset = len(body)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(stream),
                            size, len(n), 0) + n + stream  # fmt: skip
        directory += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc,
                                 len(stream), size, len(n), 0, 0, 0, 0, 0, offset) + n  # fmt: skip
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory),
                      len(body), 0)  # fmt: skip
    return body + directory + end


def npy_member(array: np.ndarray) -> tuple[bytes, int, int]:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(buf.getvalue()) + c.flush(), zlib.crc32(buf.getvalue()), len(buf.getvalue())


def npy_bomb(shape: tuple[int, ...]) -> tuple[bytes, int, int]:
    """A .npy member of uint8 zeros of ``shape`` (a whole number of MiB), deflated."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    n_bytes = int(np.prod(shape))
    assert n_bytes % MIB == 0
    return deflate_zeros(header.getvalue(), n_bytes // MIB)


def load_in_child(folder: Path, tmp_path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    print(f"\n{folder.name}: {result}")
    return result


MNIST_HEADER = struct.pack(">HBB3I", 0, 8, 3, 60_000, 28, 28)
GZ_BOMBS = {
    # MNIST's own header, then 4 GiB of zeros: the first 47 MB are read, not one byte more.
    "mnist-header": (MNIST_HEADER, "is longer than its header says", 90),
    # A header declaring a terabyte: refused before anything after it is decompressed.
    "terabyte-header": (struct.pack(">HBB3I", 0, 8, 3, 2**20, 2**10, 2**10), "declares shape", 8),
}


@pytest.mark.parametrize("kind", GZ_BOMBS)
def test_a_gzip_bomb_in_data_dir_is_refused_with_a_few_mb(tmp_path, kind):
    header, message, most_mib = GZ_BOMBS[kind]
    folder = tmp_path / kind
    write_idx_dir(folder, make_arrays(20, 10), gz=True)
    bomb = gzip_file(*deflate_zeros(header, 4096))
    assert len(bomb) < 5 * MIB  # 4 GiB of zeros and a header
    (folder / "train-images-idx3-ubyte.gz").write_bytes(bomb)
    result = load_in_child(folder, tmp_path)
    assert message in result["outcome"] and "train-images-idx3-ubyte.gz" in result["outcome"]
    assert result["peak_mib"] < most_mib


def test_an_npz_bomb_in_data_dir_is_refused_before_its_array_is_read(tmp_path):
    """A 2 MB mnist.npz whose x_train is 2 GB of zeros (2,555,904 images): refused from the
    .npy header, before one byte of the array is decompressed."""
    folder = tmp_path / "npz"
    folder.mkdir()
    (_, ytr), (xte, yte) = make_arrays(20, 10)
    members = {"x_train.npy": npy_bomb((2_555_904, 28, 28)), "y_train.npy": npy_member(ytr),
               "x_test.npy": npy_member(xte), "y_test.npy": npy_member(yte)}  # fmt: skip
    (folder / "mnist.npz").write_bytes(zip_file(members))
    assert (folder / "mnist.npz").stat().st_size < 3 * MIB
    result = load_in_child(folder, tmp_path)
    assert "x_train has shape (2555904, 28, 28): more values than" in result["outcome"]
    assert result["peak_mib"] < 8


def test_npz_members_are_read_as_numpy_wrote_them(tmp_path):
    """The reader of .npy headers and data against numpy's own: C and Fortran order, wider
    integer types, a compressed archive."""
    from mnistkit.data.sources import NPZ_KEYS, _from_npz

    (xtr, ytr), (xte, yte) = make_arrays(20, 10)
    arrays = {"x_train": np.asfortranarray(xtr), "y_train": ytr.astype(np.int64),
              "x_test": xte, "y_test": yte.astype(np.uint16)}  # fmt: skip
    np.savez_compressed(tmp_path / "a.npz", **arrays)
    files = _from_npz(tmp_path / "a.npz", {})
    for key, name in NPZ_KEYS.items():
        assert files[name] == encode_idx(arrays[key].astype(np.uint8)), key


def test_a_text_file_named_mnist_npz_is_named_for_what_it_is(tmp_path):
    from mnistkit.data import load

    (tmp_path / "mnist.npz").write_text("x_train,y_train\n1,2\n")
    with pytest.raises(DataError, match=r"mnist\.npz is not a zip archive, so not a Keras"):
        load("mnist", data_dir=tmp_path, cache_dir=tmp_path / "cache")


@pytest.mark.mnist
def test_real_mnist_from_gz_and_npz_fits_its_declared_sizes(tmp_path):
    """The sizes the readers hold MNIST's files to are those of the real files."""
    from mnistkit import data

    cached = data.load("mnist", log=lambda m: None)
    (tmp_path / "gz").mkdir()
    for name in data.MNIST_SIZES:
        blob = (cached.cache_path / name).read_bytes()
        assert len(blob) == data.MNIST_SIZES[name]
        (tmp_path / "gz" / f"{name}.gz").write_bytes(gzip.compress(blob, 1))
    (xtr, ytr), (xte, yte) = cached.arrays
    (tmp_path / "npz").mkdir()
    np.savez(tmp_path / "npz" / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    for folder in ("gz", "npz"):
        loaded = data.load("mnist", data_dir=tmp_path / folder, cache_dir=tmp_path / "c")
        assert loaded.sha256 == data.DATASETS["mnist"].raw_sha256, folder
