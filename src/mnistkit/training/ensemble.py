"""An ensemble of independent runs, shared out over the ranks of torchrun (or one process)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mnistkit.training.distributed import world_size
from mnistkit.training.runner import Run, train


def train_ensemble(
    recipe: Any, members: int, out: str | os.PathLike[str], seed: int = 0, **train_kwargs: Any
) -> list[Run]:
    """Train an ensemble of independent runs, one run per rank under torchrun.

    Member ``k`` is an ordinary run with seed ``seed + k`` in ``OUT/member-K``; rank ``r`` of
    ``W`` trains members ``r, r + W, ...`` in a process of its own (no gradients exchanged), and
    writes their run directories. Outside torchrun one process trains them all.

    Args:
        recipe: as :func:`mnistkit.train` takes it.
        members: how many runs.
        out: the folder of the members' run directories.
        seed: the first member's seed.
        **train_kwargs: the rest of :func:`mnistkit.train`'s arguments.

    Returns:
        The :class:`mnistkit.training.runner.Run` of each member this rank trained.
    """
    rank, world = int(os.environ.get("RANK", "0")), world_size()
    train_kwargs["quiet"] = train_kwargs.get("quiet", False) or rank != 0
    if torch.cuda.is_available():  # "cuda" then means this rank's own GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    runs = []
    for k in range(rank, members, world):
        member = Path(out) / f"member-{k}"
        runs.append(train(recipe, out=member, seed=seed + k, data_parallel=False, **train_kwargs))
    return runs
