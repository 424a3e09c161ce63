"""The IDX file format MNIST is distributed in, read with every field validated.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the values in C order. MNIST uses type 0x08
(unsigned byte): images are 3-D (count, 28, 28), labels 1-D (count,).
See http://yann.lecun.com/exdb/mnist/ ("FILE FORMATS FOR THE MNIST DATABASE").
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from mnistkit.errors import DataError

# IDX type code -> numpy dtype (big-endian where it matters), from the format description.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_FOR_DTYPE = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}
GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode IDX bytes into an array, checking magic, type code, dimensions and length.

    Args:
        data: the whole file (already decompressed).
        name: how to name the file in error messages.

    Returns:
        A read-only array viewing ``data`` (no copy for uint8 files).

    Raises:
        DataError: the bytes are not a well-formed IDX file.
    """
    if len(data) < 4:
        raise DataError(f"{name} is not an IDX file: only {len(data)} bytes long.")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in IDX_DTYPES:
        raise DataError(f"{name} is not an IDX file: wrong magic number 0x{data[:4].hex()}.")
    if ndim == 0:
        raise DataError(f"{name} is not a usable IDX file: it declares zero dimensions.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name} is truncated: the header needs {header} bytes, found {len(data)}.")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"{name} is {what}: shape {shape} needs {expected} bytes, found {len(data)}."
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of a uint8 or int8 array (the inverse of :func:`parse_idx`)."""
    dtype = np.dtype(array.dtype)
    if dtype not in _CODE_FOR_DTYPE:
        raise DataError(f"cannot write a {dtype} array as IDX; MNIST data is uint8.")
    header = struct.pack(">HBB", 0, _CODE_FOR_DTYPE[dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it starts with the gzip magic; errors name the file."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}.") from None
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path} is a damaged gzip file ({e}).") from None
    return data


def read_idx(path: str | Path) -> np.ndarray:
    """Read a raw or gzipped IDX file, validated."""
    path = Path(path)
    return parse_idx(read_bytes(path), name=str(path))


def check_pair(images: np.ndarray, labels: np.ndarray, name: str, num_classes: int = 10) -> None:
    """Check that images (N, H, W) and labels (N,) belong together and labels are 0..9."""
    if images.ndim != 3:
        raise DataError(f"{name}: images must be 3-D (count, height, width), got {images.shape}.")
    if labels.ndim != 1:
        raise DataError(f"{name}: labels must be 1-D, got shape {labels.shape}.")
    if len(images) != len(labels):
        raise DataError(f"{name}: {len(images)} images but {len(labels)} labels.")
    if labels.size and int(labels.max()) >= num_classes:
        raise DataError(f"{name}: a label is {int(labels.max())}, outside 0..{num_classes - 1}.")
