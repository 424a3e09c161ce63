"""The figures of a trained model: test and train accuracy and loss, the temperature fitted on
held-out images, calibration errors, per-class scores (``mnistkit evaluate``)."""

from __future__ import annotations

import os
from typing import Any

import torch

from mnistkit import data
from mnistkit import rundir as runs
from mnistkit.calibration import fit_temperature, temperature_of
from mnistkit.training import distributed
from mnistkit.training.spec import resolve_device
from mnistkit.training.step import Split, logit_scores, predict_logits, to_split


def final_metrics(model: torch.nn.Module, train: Split, val: Split | None,
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
