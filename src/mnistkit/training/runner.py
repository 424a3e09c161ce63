"""``mnistkit.train``: a recipe, the data and a seed in; a run directory and a model out.

Order of events, chosen so bad input writes nothing: check every argument, load and verify
the data, and only then create the run directory. ``config.json`` is written first (so the
folder describes itself and ``--resume`` can rebuild the run), a checkpoint after every
epoch, and ``metrics.json`` last, which marks the run finished. From before the first write to
after the last, the writing process (rank 0 under torchrun) holds the folder's lock
(``rundir.hold``): a second training into it is refused, not interleaved.

A loss that becomes NaN or infinite raises :class:`~mnistkit.errors.TrainingDiverged` at
once, before another checkpoint is written (``loop.Trainer``); the CLI exits 1.

Ctrl-C or SIGTERM: the step under way finishes, a mid-epoch checkpoint is written and
:class:`~mnistkit.errors.TrainingInterrupted` is raised (``interrupt``); the CLI says how to
resume and exits 130 (143 for SIGTERM). ``--resume`` then ends with exactly the weights and
figures of a run never stopped (on the CPU). A run killed outright (``kill -9``) resumes from
its last checkpoint, or from the start if it had none yet; one killed after its last epoch but
before ``metrics.json`` is finished by ``--resume`` (see ``resume``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mnistkit import data
from mnistkit import rundir as runs
from mnistkit.errors import MnistkitError, TrainingDiverged
from mnistkit.fileio import remove_stale_temps
from mnistkit.models import create_model
from mnistkit.recipes import Recipe
from mnistkit.training import distributed
from mnistkit.training.evaluate import final_metrics
from mnistkit.training.interrupt import StopOnSignal
from mnistkit.training.loop import Hooks, Progress, Trainer
from mnistkit.training.optim import create_optimizer
from mnistkit.training.resume import Checkpointer, check_room
from mnistkit.training.spec import TrainSpec, check_empty, resolve, resolve_device
from mnistkit.training.speed import StepExtras
from mnistkit.training.step import Split, steps_per_epoch, to_split

__all__ = ["Run", "resolve_device", "train"]


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
    verifier: bool = True,
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
        probe: see :class:`mnistkit.training.loop.Hooks` (the benchmark's accuracy probe).
        data_parallel: under torchrun (``WORLD_SIZE`` > 1), train this one run on all ranks
            (:mod:`mnistkit.training.distributed`); False trains independently in each process. Only
            rank 0 prints and writes ``out``; ``batch_size`` is the global batch.
        verifier: on MNIST, also train the segmentation verifier that reading numbers uses
            (``verifier.safetensors``, about 170 s on 2 cores); False for runs only timed.

    Returns:
        :class:`Run` with the trained model (eval mode), the metrics and the run directory.

    Raises:
        MnistkitError: an unknown recipe, non-positive epochs/batch size/learning rate, a bad
            validation fraction or device, an occupied ``out``, a bad ``resume`` folder, or
            unavailable data. Nothing is written in these cases.
    """
    t_start = time.perf_counter()
    spec = resolve(recipe, out=out, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                   val_split=val_split, dataset=dataset, threads=threads, resume=resume,
                   overwrite=overwrite)  # fmt: skip
    rec, out = spec.recipe, spec.out
    dev = resolve_device(device)
    # After every check (each rank makes the same ones) and before any rank writes to `out`.
    ctx = distributed.setup(dev, rec.batch_size) if data_parallel else None
    main = ctx is None or ctx.is_main
    if ctx is not None:
        dev, quiet = ctx.device, quiet or not main
    if threads:
        torch.set_num_threads(threads)
    splits = load_splits(spec, dev, data_dir, cache_dir, quiet)

    # One seed drives everything: the initial weights and dropout (global RNG), the shuffling.
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    model = create_model(rec.model, **rec.model_kwargs).to(dev)
    if rec.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = create_optimizer(rec.optimizer, model.parameters(), rec.lr, **rec.optimizer_kwargs)
    config = run_config(spec, splits, dev, ctx.world_size if ctx else 1)
    extras = StepExtras(model, rec, gen)
    ckpt = Checkpointer(out, model, optimizer, gen, extras, dev, config)
    if main:
        check_room(out, model, splits.n_fit)  # a full disk or a read-only folder: one line, now
    # Rank 0 alone writes the run, so it alone holds the folder, from here to the last file.
    with runs.hold(out) if main else contextlib.nullcontext():
        if main and spec.resumed is None and not spec.overwrite:
            check_empty(out)  # a process that held the folder until now has filled it
        start_epoch, position = 0, None
        history: list[dict[str, Any]] = []
        if spec.resumed is not None and (out / runs.CHECKPOINT).is_file():
            steps = steps_per_epoch(splits.n_fit, rec.batch_size)
            start_epoch, history, position = ckpt.restore(spec.resumed, splits.n_fit, steps)
            if start_epoch > rec.epochs or (
                start_epoch == rec.epochs and _finished(out, start_epoch)
            ):
                raise MnistkitError(f"{str(out)!r} already ran {start_epoch} epochs; pass --epochs "
                                    f"above {start_epoch} to continue it.")  # fmt: skip
        if main:
            remove_stale_temps(out)  # left by a writer killed before its rename
            runs.write_config(out, config)
        parallel = distributed.DataParallel(ctx, model) if ctx else None

        # Signals stop between steps with a checkpoint; torchrun ranks keep the default handlers,
        # since every rank would have to stop at the same step.
        with StopOnSignal(out, enabled=parallel is None) as stop:
            with stop.deferred():
                try:
                    progress = Progress(rec.epochs, steps_per_epoch(splits.n_fit, rec.batch_size),
                                        quiet)  # fmt: skip
                    hooks = Hooks(progress, ckpt if main else None, probe, stop)
                    trainer = Trainer(model, optimizer, rec, gen, parallel=parallel, extras=extras)
                    history = trainer.fit(splits.train, splits.val, hooks, start_epoch=start_epoch,
                                          history=history, position=position)  # fmt: skip
                except TrainingDiverged as e:
                    raise TrainingDiverged(_diverged(e, out, rec.lr, history)) from None
            stop.check()  # a signal during the last step: the final checkpoint is on disk
            train_seconds = sum(row["seconds"] for row in history)
            metrics, temperature = final_metrics(model, splits.train, splits.val, splits.held,
                                                 splits.test, parallel)  # fmt: skip
            config["temperature"] = temperature
            if main and verifier and spec.dataset == "mnist":
                # The segmentation verifier that Classifier.read adds to its path search, on
                # the run's own training digits. Here, not on a first read: the run is then
                # complete when written (a read-only run, the onnx backend without torch and
                # serving workers need nothing more), and its 90 s are paid once.
                from mnistkit.verifier_train import add_verifier

                log = None if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
                add_verifier(out, splits.train.x[:, 0].cpu().numpy(), spec.seed, log)
            metrics.update(
                recipe=rec.name, dataset=spec.dataset, epochs=rec.epochs, seed=spec.seed,
                device=dev.type, threads=torch.get_num_threads(),
                train_seconds=round(train_seconds, 3),
                total_seconds=round(time.perf_counter() - t_start, 3),
                examples_per_second=round(splits.n_fit * rec.epochs / max(train_seconds, 1e-9), 1),
            )  # fmt: skip
            if main:
                runs.save_run(out, model, config, metrics, history)
    distributed.teardown(sync=True)
    return Run(model.eval(), metrics, out, temperature)


@dataclass(frozen=True)
class Splits:
    """The images of a run, on its device: ``held`` (the last training images) is the
    validation split when there is one, else the calibration split, else None."""

    train: Split
    held: Split | None
    val: Split | None
    test: Split
    n_cal: int
    source: str
    sha256: dict[str, str]

    @property
    def n_fit(self) -> int:
        return len(self.train)

    @property
    def n_val(self) -> int:
        return len(self.val) if self.val is not None else 0


def load_splits(
    spec: TrainSpec,
    dev: torch.device,
    data_dir: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None,
    quiet: bool,
) -> Splits:
    """Load and verify the data set, and cut the held-out images from the training split's end."""
    loaded = (
        data.load(spec.dataset, data_dir=data_dir, cache_dir=cache_dir, log=lambda m: None)
        if quiet
        else data.load(spec.dataset, data_dir=data_dir, cache_dir=cache_dir)
    )
    (xtr, ytr), (xte, yte) = loaded.arrays
    n_val = int(round(len(ytr) * spec.val_split))
    n_cal = 0 if n_val else int(round(len(ytr) * spec.recipe.calibration_split))
    if n_val + n_cal and n_val + n_cal >= len(ytr):
        what = (f"a validation split of {spec.val_split}" if n_val
                else f"a calibration split of {spec.recipe.calibration_split}")  # fmt: skip
        raise MnistkitError(f"{what} leaves no training images.")
    x_all = torch.from_numpy(xtr.copy()).unsqueeze(1)  # (N, 1, 28, 28) uint8
    y_all = torch.from_numpy(ytr.astype("int64"))
    n_fit = len(y_all) - n_val - n_cal
    held = to_split(x_all[n_fit:], y_all[n_fit:], dev) if n_val + n_cal else None
    test = to_split(
        torch.from_numpy(xte.copy()).unsqueeze(1), torch.from_numpy(yte.astype("int64")), dev
    )
    return Splits(to_split(x_all[:n_fit], y_all[:n_fit], dev), held, held if n_val else None,
                  test, n_cal, loaded.source, loaded.sha256)  # fmt: skip


def run_config(
    spec: TrainSpec, splits: Splits, dev: torch.device, processes: int
) -> dict[str, Any]:
    """What ``config.json`` holds: enough to train the run again, or to resume it."""
    rec = spec.recipe
    return {
        "recipe": rec.name, "recipe_settings": rec.to_dict(), "model": rec.model,
        "model_kwargs": rec.model_kwargs, "optimizer": rec.optimizer,
        "optimizer_kwargs": rec.optimizer_kwargs, "epochs": rec.epochs,
        "batch_size": rec.batch_size, "lr": rec.lr, "schedule": rec.schedule, "l1": rec.l1,
        "seed": spec.seed, "val_split": spec.val_split, "device": dev.type,
        "threads": torch.get_num_threads(), "dataset": spec.dataset,
        "data_source": splits.source, "data_sha256": splits.sha256, "n_train": splits.n_fit,
        "n_val": splits.n_val, "n_test": len(splits.test), "versions": _versions(),
        "processes": processes,
        "calibration": {"source": "validation split" if splits.n_val else
                        "calibration split" if splits.n_cal else "none",
                        "images": splits.n_val + splits.n_cal},
    }  # fmt: skip


def _diverged(e: TrainingDiverged, out: Path, lr: float, history: list[dict[str, Any]]) -> str:
    kept = (f"{str(out)!r} keeps its last checkpoint ({len(history)} epochs done)" if history
            else f"{str(out)!r} has no checkpoint yet")  # fmt: skip
    return f"{e}; training stopped, and {kept}. A learning rate below {lr:g} may avoid it."


def _finished(out: Path, epochs: int) -> bool:
    """Whether ``metrics.json`` marks the run as finished after ``epochs`` epochs."""
    try:
        return runs.read_metrics(out).get("epochs") == epochs
    except MnistkitError:
        return False
