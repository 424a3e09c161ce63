"""`mnistkit bench train`: what it counts and prints, on the synthetic "tiny" set.

Never on time: these check which steps are probed, what reaches the JSON and the summary.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace

import pytest
import torch
from conftest import make_arrays

from mnistkit.bench.train import TargetProbe, bench_train, format_train
from mnistkit.cli import main
from mnistkit.models import create_model
from mnistkit.recipes import get_recipe
from mnistkit.training.loop import Hooks, Trainer
from mnistkit.training.optim import create_optimizer
from mnistkit.training.speed import StepExtras
from mnistkit.training.step import steps_per_epoch, to_split


def test_bench_train_records_the_first_crossing(tiny_registered, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "train", "--recipe", "seed-dense512", "--seeds", "2", "--epochs", "2",
                 "--dataset", "tiny", "--data-dir", str(tiny_registered), "--target", "0.01",
                 "--json", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    runs = result["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    # 200 images in batches of 128: 2 steps an epoch, probed every step; 1 % is reached at once.
    assert result["probe_every_steps"] == 1
    for r in runs:
        assert r["steps_to_target"] == 1 and 0 <= r["seconds_to_target"] <= r["fit_seconds"]
    summary = result["summary"]
    assert summary["reached_target"] == summary["seeds"] == 2
    accuracies = [r["test_accuracy"] for r in runs]
    assert summary["test_accuracy_mean"] == pytest.approx(statistics.fmean(accuracies))
    assert summary["test_accuracy_std"] == pytest.approx(statistics.stdev(accuracies))
    printed = capsys.readouterr().out
    assert "mean ± std" in printed and result["machine"]["cpu"] in printed
    assert result["machine"]["gomp_spincount"]  # how the threads waited is part of the figure


def test_a_target_never_reached_is_none_and_said(tiny_registered):
    result = bench_train("seed-dense512", seeds=1, epochs=1, dataset="tiny",
                         data_dir=tiny_registered, target=1.01)  # fmt: skip
    assert result["runs"][0]["seconds_to_target"] is None
    assert result["summary"]["reached_target"] == 0
    assert result["summary"]["seconds_to_target_mean"] is None
    assert "never" in format_train(result)


def test_the_probe_copies_the_ema_model_only_when_it_evaluates(monkeypatch):
    """With an EMA the model the probe reads is a copy holding the averaged weights: made on
    the probed steps only, not after every step."""
    (xtr, ytr), (xte, yte) = make_arrays()
    cpu = torch.device("cpu")
    train = to_split(torch.from_numpy(xtr).unsqueeze(1), torch.from_numpy(ytr).long(), cpu)
    test = to_split(torch.from_numpy(xte).unsqueeze(1), torch.from_numpy(yte).long(), cpu)
    recipe = replace(get_recipe("seed-dense512"), ema=0.9, batch_size=32, epochs=1)
    copies = []
    original = StepExtras.eval_model
    monkeypatch.setattr(StepExtras, "eval_model",
                        lambda self, m: copies.append(1) or original(self, m))  # fmt: skip
    torch.manual_seed(0)
    model = create_model(recipe.model)
    opt = create_optimizer(recipe.optimizer, model.parameters(), recipe.lr)
    probe = TargetProbe(test, target=1.01, every=3)
    Trainer(model, opt, recipe, torch.Generator().manual_seed(0)).fit(
        train, None, Hooks(probe=probe)
    )
    steps = steps_per_epoch(len(train), 32)
    assert steps == 7 and probe.evaluations == 2  # steps 3 and 6
    assert len(copies) == probe.evaluations
