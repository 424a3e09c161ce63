"""Files written so that a killed process never leaves half of one behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mnistkit.errors import WriteError

TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"  # what write_atomic's temp files look like


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder, fsync, then rename.

    A reader sees the old file or the new one, never a mix; the temp file is removed on error.
    The folder is synced after the rename, so the new name survives a power cut too.

    Raises:
        WriteError: (an OSError) the folder cannot be created or written, or the disk is full.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.",
                                   suffix=TEMP_SUFFIX)  # fmt: skip
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as e:
        err = WriteError(f"cannot write {path} ({e.strerror or e}); any earlier version of it "
                         f"is intact.")  # fmt: skip
        err.errno = e.errno
        raise err from None
    finally:
        if tmp is not None:  # killed by an exception (Ctrl-C included) before the rename
            Path(tmp).unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some systems cannot open a folder; the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_temp(name: str) -> bool:
    """Whether a file name is that of a temp file write_atomic makes."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[str]:
    """Delete the temp files a killed writer left in ``folder``; returns their names."""
    removed = []
    for p in Path(folder).iterdir():
        if is_temp(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
