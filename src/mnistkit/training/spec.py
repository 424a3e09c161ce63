"""What a training run is, resolved before anything is loaded or written: a recipe with the
caller's overrides, or a run directory to resume with its own settings. Every argument is
checked here, so bad input costs nothing and writes nothing."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mnistkit import rundir as runs
from mnistkit.errors import MnistkitError
from mnistkit.models import create_model
from mnistkit.recipes import Recipe, get_recipe
from mnistkit.runconfig import MAX_EPOCHS, SEEDS


@dataclass(frozen=True)
class TrainSpec:
    """One training run before it starts.

    Attributes:
        recipe: the recipe with ``epochs``, ``batch_size`` and ``lr`` overridden as asked.
        out: the run directory.
        seed: the one seed of every random number.
        val_split: fraction of the training images held out for validation (Keras's
            ``validation_split``: from the end).
        dataset: the data set's name.
        resumed: ``config.json`` as read from the run being resumed, or None for a new run;
            the checkpoint is checked against it.
        overwrite: a new run may write into a folder that holds files.
    """

    recipe: Recipe
    out: Path
    seed: int
    val_split: float
    dataset: str
    resumed: dict[str, Any] | None
    overwrite: bool


def resolve(
    recipe: str | Recipe | None,
    *,
    out: str | os.PathLike[str] | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    seed: int,
    val_split: float,
    dataset: str,
    threads: int | None,
    resume: str | os.PathLike[str] | None,
    overwrite: bool,
) -> TrainSpec:
    """The :class:`TrainSpec` of :func:`mnistkit.train`'s arguments (see there).

    Raises:
        MnistkitError: an unknown recipe, an out-of-range number, a bad validation fraction,
            an occupied ``out``, a bad ``resume`` folder, or bad model arguments.
    """
    _check_positive("epochs", epochs, most=MAX_EPOCHS)
    _check_positive("the batch size", batch_size)
    _check_positive("threads", threads, most=1024)  # beyond 1024 a typo, not a machine
    _check_positive("the learning rate", lr, float)
    if isinstance(seed, bool) or not isinstance(seed, int) or not SEEDS[0] <= seed <= SEEDS[1]:
        raise MnistkitError(f"the seed must be an integer from {SEEDS[0]} to {SEEDS[1]}, "
                            f"not {seed!r}.")  # fmt: skip
    if not 0.0 <= val_split < 1.0:
        raise MnistkitError(f"the validation split must lie in [0, 1), not {val_split!r}.")
    resumed = None
    if resume is not None:
        resumed = runs.read_config(resume, resume=True)  # every field checked
        if (
            not (Path(resume) / runs.CHECKPOINT).is_file()
            and (Path(resume) / runs.METRICS).is_file()
        ):
            raise MnistkitError(f"{str(resume)!r} has no checkpoint to resume from.")
        rec = Recipe(**resumed["recipe_settings"])
        if recipe is not None and (recipe if isinstance(recipe, str) else recipe.name) != rec.name:
            raise MnistkitError(f"{str(resume)!r} is a run of {rec.name!r}, not {recipe!r}.")
        seed, val_split, dataset = resumed["seed"], resumed["val_split"], resumed["dataset"]
        batch_size, lr = resumed["batch_size"], resumed["lr"]
        epochs = epochs or resumed["epochs"]
        out = resume
    elif recipe is None:
        raise MnistkitError("name a recipe to train (see `mnistkit models`), or --resume a run.")
    else:
        rec = get_recipe(recipe) if isinstance(recipe, str) else recipe
    rec = replace(rec, epochs=epochs or rec.epochs, batch_size=batch_size or rec.batch_size,
                  lr=lr or rec.lr)  # fmt: skip
    if not 0.0 <= rec.calibration_split < 1.0:
        raise MnistkitError(f"the recipe's calibration_split must lie in [0, 1), "
                            f"not {rec.calibration_split!r}.")  # fmt: skip
    out = Path(out or Path("runs") / f"{rec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and not out.is_dir():
        raise MnistkitError(f"--out {str(out)!r} is not a folder; choose another --out.")
    if resume is None and not overwrite:
        check_empty(out)  # early, so a refusal costs nothing; again under the run's lock
    create_model(rec.model, **rec.model_kwargs)  # fail on bad model arguments before loading data
    return TrainSpec(rec, out, seed, val_split, dataset, resumed, overwrite)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise MnistkitError(f"--device must be auto, cpu or cuda, not {device!r}.")
    if device == "cuda" and not torch.cuda.is_available():
        raise MnistkitError("--device cuda was asked for but PyTorch sees no CUDA GPU; use cpu.")
    return torch.device(device)


def _check_positive(name: str, value: float | None, kind: type = int, most: int = 0) -> None:
    """``value`` is None, or a positive finite number of ``kind``, no more than ``most`` if set."""
    if value is None:
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and math.isfinite(value) and value > 0 and (not most or value <= most):
        return
    what = "a positive integer" if kind is int else "a positive finite number"
    raise MnistkitError(
        f"{name} must be {what}{f' no more than {most:,}' if most else ''}, not {value!r}."
    )


def check_empty(out: Path) -> None:
    if runs.holds_files(out):
        raise MnistkitError(
            f"{str(out)!r} already holds files; choose another --out or --resume it."
        )
