"""mnistkit.heap: the allocator settings a serving process takes."""

from __future__ import annotations

import platform
import sys

import pytest

from mnistkit.heap import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")  # fmt: skip
def test_glibc_takes_the_settings():
    assert keep_freed_memory() is True
