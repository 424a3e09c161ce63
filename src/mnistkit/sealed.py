"""safetensors files sealed with a SHA-256, so damage and tampering are caught on load.

safetensors already makes loading safe (no pickle: reading weights never executes code) and
checks the header's structure, but a flipped bit inside the tensor data, or an edited
header value, still loads as a valid file. The seal is a SHA-256 over every metadata entry
and every tensor's name, dtype, shape and bytes, stored in the header's ``__metadata__`` as
``sha256``; :func:`unpack` recomputes it and refuses any file whose seal is missing or wrong.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from mnistkit.errors import MnistkitError

SEAL = "sha256"


def digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """The seal: SHA-256 over the metadata (but the seal itself) and every tensor, by name."""
    h = hashlib.sha256()
    for key in sorted(metadata):
        if key != SEAL:
            h.update(json.dumps([key, metadata[key]]).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)  # the raw bytes, any dtype
    return h.hexdigest()


def pack(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes of dense CPU ``tensors`` with ``metadata`` and the seal added."""
    return st_save(tensors, metadata={**metadata, SEAL: digest(tensors, metadata)})


def unpack(path: str | Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read and verify a sealed file.

    Args:
        path: the file.
        what: what it is, for messages ("weights", "checkpoint").

    Returns:
        ``(tensors, metadata)``; the metadata without the seal.

    Raises:
        MnistkitError: the file is missing, unreadable, truncated, not safetensors, unsealed
            (not written by mnistkit) or fails its seal (damaged or edited).
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise MnistkitError(
            f"{str(path)!r} is missing; the run did not finish or was moved."
        ) from None
    except OSError as e:
        raise MnistkitError(f"cannot read {str(path)!r}: {e.strerror or e}.") from None
    try:
        tensors = st_load(blob)
        size = int.from_bytes(blob[:8], "little")  # valid: st_load has parsed the same header
        metadata = json.loads(blob[8 : 8 + size]).get("__metadata__") or {}
    except (SafetensorError, ValueError, TypeError, AttributeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MnistkitError(
            f"{str(path)!r} is truncated or not a safetensors file ({reason})."
        ) from None
    seal = metadata.pop(SEAL, None)
    if seal is None:
        raise MnistkitError(f"{str(path)!r} carries no mnistkit seal: these {what} were not "
                            f"written by mnistkit train; train the run again.")  # fmt: skip
    if seal != digest(tensors, metadata):
        raise MnistkitError(f"{str(path)!r} is damaged or was edited: its {what} fail their "
                            f"SHA-256 seal; restore the file or train the run again.")  # fmt: skip
    return tensors, metadata
