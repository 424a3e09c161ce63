"""The IDX reader accepts well-formed files and names what is wrong with broken ones."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnistkit.data.idx import check_pair, encode_idx, parse_idx, read_idx
from mnistkit.errors import DataError


def test_round_trip_raw_and_gzip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    blob = encode_idx(images)
    assert blob[:4] == b"\x00\x00\x08\x03"
    assert struct.unpack(">3I", blob[4:16]) == (2, 3, 4)
    (tmp_path / "a").write_bytes(blob)
    (tmp_path / "a.gz").write_bytes(gzip.compress(blob))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), images)


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "only 0 bytes"),
        (b"\x00\x01\x08\x01" + struct.pack(">I", 1) + b"\x00", "wrong magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "wrong magic"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "header needs 16 bytes"),
        (encode_idx(np.zeros((3, 2, 2), np.uint8))[:-1], "truncated"),
        (encode_idx(np.zeros((3, 2, 2), np.uint8)) + b"\x00", "longer than its header says"),
    ],
)
def test_broken_files_are_named(blob, message):
    with pytest.raises(DataError, match=message):
        parse_idx(blob, name="somefile")


def test_damaged_gzip_is_reported(tmp_path):
    good = gzip.compress(encode_idx(np.zeros((5, 2, 2), np.uint8)))
    (tmp_path / "x.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"x\.gz is a damaged gzip file"):
        read_idx(tmp_path / "x.gz")


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope")


def test_pairs_must_match():
    images = np.zeros((3, 28, 28), np.uint8)
    check_pair(images, np.array([0, 9, 5], np.uint8), "ok")
    with pytest.raises(DataError, match="3 images but 2 labels"):
        check_pair(images, np.array([0, 1], np.uint8), "x")
    with pytest.raises(DataError, match="outside 0..9"):
        check_pair(images, np.array([0, 1, 10], np.uint8), "x")
    with pytest.raises(DataError, match="must be 3-D"):
        check_pair(images[0], np.array([0], np.uint8), "x")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_crash(blob):
    try:
        arr = parse_idx(blob)
    except DataError:
        return
    assert arr.size * arr.dtype.itemsize <= len(blob)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 200), st.integers(0, 7))
def test_bit_flips_and_truncations_are_caught_or_consistent(cut, bit):
    blob = bytearray(encode_idx(np.arange(60, dtype=np.uint8).reshape(5, 3, 4)))
    cut = min(cut, len(blob))
    flipped = bytearray(blob)
    flipped[cut % len(blob)] ^= 1 << bit
    for candidate in (bytes(blob[:cut]), bytes(flipped)):
        try:
            arr = parse_idx(candidate)
        except DataError:
            continue
        # A flip in the data area leaves a valid file of the same shape: only checksums catch it.
        assert arr.shape == (5, 3, 4)
