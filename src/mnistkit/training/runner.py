"""``mnistkit.train``: a recipe, the data and a seed in; a run directory and a model out.

Order of events, chosen so bad input writes nothing: check every argument, load and verify
the data, and only then create the run directory. ``config.json`` is written first (so the
folder describes itself and ``--resume`` can rebuild the run), a checkpoint after every
epoch, and ``metrics.json`` last, which marks the run finished.

Ctrl-C or SIGTERM: the step under way finishes, a mid-epoch checkpoint is written and
:class:`~mnistkit.errors.TrainingInterrupted` is raised (``interrupt``); the CLI says how to
resume and exits 130 (143 for SIGTERM). ``--resume`` then ends with exactly the weights and
figures of a run never stopped (on the CPU). A run killed outright (``kill -9``) resumes from
its last checkpoint, or from the start if it had none yet; one killed after its last epoch but
before ``metrics.json`` is finished by ``--resume`` (see ``resume``).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mnistkit import data
from mnistkit import rundir as runs
from mnistkit.calibration import fit_temperature, temperature_of
from mnistkit.errors import MnistkitError, TrainingDiverged
from mnistkit.fileio import remove_stale_temps
from mnistkit.models import create_model
from mnistkit.recipes import Recipe, get_recipe
from mnistkit.runconfig import MAX_EPOCHS, SEEDS
from mnistkit.training import distributed
from mnistkit.training.interrupt import StopOnSignal
from mnistkit.training.loop import (
    Split,
    fit,
    logit_scores,
    predict_logits,
    steps_per_epoch,
    to_split,
)
from mnistkit.training.optim import create_optimizer
from mnistkit.training.resume import Checkpointer, check_room
from mnistkit.training.speed import StepExtras


@dataclass
class Run:
    """A finished training run: the model (eval mode), ``metrics.json``, and where it lies.

    ``model(x)`` gives the raw logits; ``softmax(model(x) / temperature)`` the calibrated
    probabilities that ``predict``, the server and the report show (``calibration``).
    """

    model: torch.nn.Module
    metrics: dict[str, Any]
    path: Path
    temperature: float = 1.0


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


def _versions() -> dict[str, str]:
    from mnistkit.version import __version__

    return {
        "mnistkit": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def train(
    recipe: str | Recipe | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    val_split: float = 0.0,
    device: str = "auto",
    threads: int | None = None,
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    quiet: bool = False,
    resume: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    probe: Callable[[Callable[[], torch.nn.Module], int, float], None] | None = None,
    data_parallel: bool = True,
) -> Run:
    """Train a recipe, evaluate it on the test split and write a run directory.

    Args:
        recipe: a recipe name (``"seed-dense512"``...) or a :class:`Recipe`; optional with
            ``resume``, which takes the run's own.
        out: the run directory; default ``runs/<recipe>-<date>-<time>``.
        epochs, batch_size, lr: override the recipe's. With ``resume``, ``epochs`` may
            extend the run; the rest come from the run's config.
        seed: seeds the initial weights, the shuffling and dropout. Same seed, same thread
            count, same result on the CPU.
        val_split: fraction of the training images held out for validation, taken from the
            end as Keras's ``validation_split`` does; 0 for none. The validation images also
            fit the temperature that calibrates the probabilities; without them the recipe's
            ``calibration_split`` of the training images is held out for it (none for the
            seed recipes, whose probabilities then stay as trained: ``T = 1``).
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: CPU threads for PyTorch (``torch.set_num_threads``); default PyTorch's.
        dataset, data_dir, cache_dir: where the data come from (see :func:`mnistkit.data.load`).
        quiet: no progress output.
        resume: a run directory with a checkpoint: continue it where it stopped.
        overwrite: allow ``out`` to be a non-empty folder.
        probe: passed to :func:`mnistkit.training.loop.fit` (the benchmark's accuracy probe).
        data_parallel: under torchrun (``WORLD_SIZE`` > 1), train this one run on all ranks
            (:mod:`mnistkit.training.distributed`); False trains independently in each process. Only
            rank 0 prints and writes ``out``; ``batch_size`` is the global batch.

    Returns:
        :class:`Run` with the trained model (eval mode), the metrics and the run directory.

    Raises:
        MnistkitError: an unknown recipe, non-positive epochs/batch size/learning rate, a bad
            validation fraction or device, an occupied ``out``, a bad ``resume`` folder, or
            unavailable data. Nothing is written in these cases.
    """
    t_start = time.perf_counter()
    _check_positive("epochs", epochs, most=MAX_EPOCHS)
    _check_positive("the batch size", batch_size)
    _check_positive("threads", threads, most=1024)  # beyond 1024 a typo, not a machine
    _check_positive("the learning rate", lr, float)
    if isinstance(seed, bool) or not isinstance(seed, int) or not SEEDS[0] <= seed <= SEEDS[1]:
        raise MnistkitError(f"the seed must be an integer from {SEEDS[0]} to {SEEDS[1]}, "
                            f"not {seed!r}.")  # fmt: skip
    if not 0.0 <= val_split < 1.0:
        raise MnistkitError(f"the validation split must lie in [0, 1), not {val_split!r}.")
    config: dict[str, Any] = {}
    if resume is not None:
        config = runs.read_config(resume, resume=True)  # every field checked
        if (
            not (Path(resume) / runs.CHECKPOINT).is_file()
            and (Path(resume) / runs.METRICS).is_file()
        ):
            raise MnistkitError(f"{str(resume)!r} has no checkpoint to resume from.")
        rec = Recipe(**config["recipe_settings"])
        if recipe is not None and (recipe if isinstance(recipe, str) else recipe.name) != rec.name:
            raise MnistkitError(f"{str(resume)!r} is a run of {rec.name!r}, not {recipe!r}.")
        seed, val_split, dataset = config["seed"], config["val_split"], config["dataset"]
        batch_size, lr = config["batch_size"], config["lr"]
        epochs = epochs or config["epochs"]
        out = resume
    elif recipe is None:
        raise MnistkitError("name a recipe to train (see `mnistkit models`), or --resume a run.")
    else:
        rec = get_recipe(recipe) if isinstance(recipe, str) else recipe
    rec = replace(rec, epochs=epochs or rec.epochs, batch_size=batch_size or rec.batch_size,
                  lr=lr or rec.lr)  # fmt: skip
    cal_split = rec.calibration_split
    if not 0.0 <= cal_split < 1.0:
        raise MnistkitError(
            f"the recipe's calibration_split must lie in [0, 1), not {cal_split!r}."
        )
    out = Path(out or Path("runs") / f"{rec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and not out.is_dir():
        raise MnistkitError(f"--out {str(out)!r} is not a folder; choose another --out.")
    if resume is None and not overwrite:
        _check_empty(out)  # early, so a refusal costs nothing; again under the lock below
    dev = resolve_device(device)
    create_model(rec.model, **rec.model_kwargs)  # fail on bad model arguments before loading data
    # After every check (each rank makes the same ones) and before any rank writes to `out`.
    ctx = distributed.setup(dev, rec.batch_size) if data_parallel else None
    main = ctx is None or ctx.is_main
    if ctx is not None:
        dev, quiet = ctx.device, quiet or not main
    if threads:
        torch.set_num_threads(threads)

    loaded = (
        data.load(dataset, data_dir=data_dir, cache_dir=cache_dir, log=lambda m: None)
        if quiet
        else data.load(dataset, data_dir=data_dir, cache_dir=cache_dir)
    )
    (xtr, ytr), (xte, yte) = loaded.arrays
    # The held-out images, from the end: the validation split, or else the calibration split.
    n_val = int(round(len(ytr) * val_split))
    n_cal = 0 if n_val else int(round(len(ytr) * cal_split))
    if n_val + n_cal and n_val + n_cal >= len(ytr):
        what = (
            f"a validation split of {val_split}" if n_val else f"a calibration split of {cal_split}"
        )
        raise MnistkitError(f"{what} leaves no training images.")
    x_all = torch.from_numpy(xtr.copy()).unsqueeze(1)  # (N, 1, 28, 28) uint8
    y_all = torch.from_numpy(ytr.astype("int64"))
    n_fit = len(y_all) - n_val - n_cal
    train_split = to_split(x_all[:n_fit], y_all[:n_fit], dev)
    held = to_split(x_all[n_fit:], y_all[n_fit:], dev) if n_val + n_cal else None
    val = held if n_val else None
    test = to_split(
        torch.from_numpy(xte.copy()).unsqueeze(1), torch.from_numpy(yte.astype("int64")), dev
    )

    # One seed drives everything: the initial weights and dropout (global RNG), the shuffling.
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = create_model(rec.model, **rec.model_kwargs).to(dev)
    if rec.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = create_optimizer(rec.optimizer, model.parameters(), rec.lr, **rec.optimizer_kwargs)

    file_config = config  # as read by --resume, checked against the checkpoint's copy
    config = {
        "recipe": rec.name, "recipe_settings": rec.to_dict(), "model": rec.model,
        "model_kwargs": rec.model_kwargs, "optimizer": rec.optimizer,
        "optimizer_kwargs": rec.optimizer_kwargs, "epochs": rec.epochs,
        "batch_size": rec.batch_size, "lr": rec.lr, "schedule": rec.schedule, "l1": rec.l1,
        "seed": seed, "val_split": val_split, "device": dev.type, "threads": torch.get_num_threads(),
        "dataset": dataset, "data_source": loaded.source, "data_sha256": loaded.sha256,
        "n_train": n_fit, "n_val": n_val, "n_test": len(test), "versions": _versions(),
        "processes": ctx.world_size if ctx else 1,
        "calibration": {"source": "validation split" if n_val else
                        "calibration split" if n_cal else "none", "images": n_val + n_cal},
    }  # fmt: skip
    extras = StepExtras(model, rec, gen)
    ckpt = Checkpointer(out, model, optimizer, gen, extras, dev, config)
    if main:
        check_room(out, model, n_fit)  # a full disk or a read-only folder: one line, now
    # Rank 0 alone writes the run, so it alone holds the folder, from here to the last file.
    with runs.hold(out) if main else contextlib.nullcontext():
        if main and resume is None and not overwrite:
            _check_empty(out)  # a process that held the folder until now has filled it
        start_epoch, position = 0, None
        history: list[dict[str, Any]] = []
        if resume is not None and (out / runs.CHECKPOINT).is_file():
            steps = steps_per_epoch(n_fit, rec.batch_size)
            start_epoch, history, position = ckpt.restore(file_config, n_fit, steps)
            if start_epoch > rec.epochs or (
                start_epoch == rec.epochs and _finished(out, start_epoch)
            ):
                raise MnistkitError(f"{str(out)!r} already ran {start_epoch} epochs; pass --epochs "
                                    f"above {start_epoch} to continue it.")  # fmt: skip
        if main:
            remove_stale_temps(out)  # left by a writer killed before its rename
            runs.write_config(out, config)
        parallel = distributed.DataParallel(ctx, model) if ctx else None

        def checkpoint(epoch: int, hist: list[dict[str, Any]]) -> None:
            if main:
                ckpt.save(epoch, hist)

        # Signals stop between steps with a checkpoint; torchrun ranks keep the default handlers,
        # since every rank would have to stop at the same step.
        with StopOnSignal(out, enabled=parallel is None) as stop:
            with stop.deferred():
                try:
                    history = fit(model, optimizer, rec, train_split, val, epochs=rec.epochs,
                                  batch_size=rec.batch_size, lr=rec.lr, generator=gen,
                                  start_epoch=start_epoch, history=history,
                                  on_epoch_end=checkpoint, quiet=quiet, probe=probe,
                                  parallel=parallel, extras=extras, position=position, stop=stop,
                                  on_stop=ckpt.save_position)  # fmt: skip
                except TrainingDiverged as e:
                    raise TrainingDiverged(_diverged(e, out, rec.lr, history)) from None
            stop.check()  # a signal during the last step: the final checkpoint is on disk
            train_seconds = sum(row["seconds"] for row in history)
            metrics, temperature = _final_metrics(model, train_split, val, held, test, parallel)
            config["temperature"] = temperature
            metrics.update(
                recipe=rec.name, dataset=dataset, epochs=rec.epochs, seed=seed, device=dev.type,
                threads=torch.get_num_threads(), train_seconds=round(train_seconds, 3),
                total_seconds=round(time.perf_counter() - t_start, 3),
                examples_per_second=round(n_fit * rec.epochs / max(train_seconds, 1e-9), 1),
            )  # fmt: skip
            if main:
                runs.save_run(out, model, config, metrics, history)
    distributed.teardown(sync=True)
    return Run(model.eval(), metrics, out, temperature)


def _diverged(e: TrainingDiverged, out: Path, lr: float, history: list[dict[str, Any]]) -> str:
    kept = (f"{str(out)!r} keeps its last checkpoint ({len(history)} epochs done)" if history
            else f"{str(out)!r} has no checkpoint yet")  # fmt: skip
    return f"{e}; training stopped, and {kept}. A learning rate below {lr:g} may avoid it."


def _check_empty(out: Path) -> None:
    if runs.holds_files(out):
        raise MnistkitError(
            f"{str(out)!r} already holds files; choose another --out or --resume it."
        )


def _finished(out: Path, epochs: int) -> bool:
    """Whether ``metrics.json`` marks the run as finished after ``epochs`` epochs."""
    try:
        return runs.read_metrics(out).get("epochs") == epochs
    except MnistkitError:
        return False


def _final_metrics(model: torch.nn.Module, train: Split, val: Split | None,
                   held: Split | None, test: Split,
                   parallel: distributed.DataParallel | None = None,
                   ) -> tuple[dict[str, Any], float]:  # fmt: skip
    """Test and train figures of the final model in eval mode (no dropout), as Keras's
    ``evaluate`` gives them (the train figures on the images it trained on), and the
    temperature fitted on the held-out images (``held``: the validation split or the
    calibration split; ``T = 1`` without). Under torchrun each rank computes a part of the
    logits of each split."""
    logits_of = predict_logits if parallel is None else parallel.logits
    t, va = 1.0, None
    if held is not None:
        held_logits = logits_of(model, held.x)
        t = fit_temperature(held_logits, held.y)
        va = logit_scores(held_logits, held.y) if val is held else None
    test_logits = logits_of(model, test.x)
    te = logit_scores(test_logits, test.y)
    tr = logit_scores(logits_of(model, train.x), train.y)
    return {
        "test_accuracy": te["accuracy"], "test_loss": te["loss"],
        "train_accuracy": tr["accuracy"], "train_loss": tr["loss"],
        "val_accuracy": va["accuracy"] if va else None,
        **calibration_metrics(test_logits, test.y, t),
    }, t  # fmt: skip


def calibration_metrics(
    logits: torch.Tensor, y: torch.Tensor, temperature: float
) -> dict[str, float]:
    """``test_ece`` (15 bins) of the probabilities a run reports, ``softmax(logits / T)``, and
    ``test_ece_uncalibrated`` of the model's own (``T = 1``); ``test_calibrated_loss``."""
    from mnistkit.metrics import calibration as reliability

    z, labels = logits.double().cpu(), y.cpu().numpy()
    return {
        "test_ece": reliability(torch.softmax(z / temperature, 1).numpy(), labels).ece,
        "test_ece_uncalibrated": reliability(torch.softmax(z, 1).numpy(), labels).ece,
        "test_calibrated_loss": torch.nn.functional.cross_entropy(z / temperature, y.cpu()).item(),
    }


def evaluate_run(
    run_dir: str | os.PathLike[str],
    *,
    device: str = "cpu",
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Evaluate a run's model on its data set's test and training splits.

    Args:
        run_dir: a run directory.
        device: where to evaluate.
        data_dir, cache_dir: where the data come from.

    Returns:
        ``recipe``, ``dataset``, ``test_loss``, ``test_accuracy``, ``train_loss``,
        ``train_accuracy`` (all training images, held-out ones included), ``temperature``,
        ``test_ece`` and ``test_ece_uncalibrated`` (see :func:`calibration_metrics`) and
        ``per_class``: a list of ``{"class", "precision", "recall", "support"}`` on the test
        split.
    """
    from mnistkit.metrics import class_scores, confusion_matrix

    model, config = runs.load_model(run_dir, device=resolve_device(device))
    loaded = data.load(
        config["dataset"], data_dir=data_dir, cache_dir=cache_dir, log=lambda m: None
    )
    (xtr, ytr), (xte, yte) = loaded.arrays
    dev = next(model.parameters()).device
    t = temperature_of(config)
    out: dict[str, Any] = {"recipe": config.get("recipe"), "dataset": config["dataset"],
                           "temperature": t}  # fmt: skip
    for name, x, y in (("test", xte, yte), ("train", xtr, ytr)):
        split = to_split(
            torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype("int64")), dev
        )
        logits = predict_logits(model, split.x)
        res = logit_scores(logits, split.y)
        out[f"{name}_loss"], out[f"{name}_accuracy"] = res["loss"], res["accuracy"]
        if name == "test":
            scores = class_scores(confusion_matrix(yte, res["predictions"].numpy()))
            cal = calibration_metrics(logits, split.y, t)
            out.update(test_ece=cal["test_ece"], test_ece_uncalibrated=cal["test_ece_uncalibrated"])
    out["per_class"] = [
        {"class": k, "precision": float(scores.precision[k]), "recall": float(scores.recall[k]),
         "support": int(scores.support[k])}
        for k in range(len(scores.support))
    ]  # fmt: skip
    return out
