"""Run directories written by earlier versions, whose recipes had settings since removed.

Their ``config.json`` keeps the retired fields in ``recipe_settings``. Everything that only
needs the model (evaluate, report, compare, export, predict) reads them as before; resuming
one is refused with one line that says why, and writes nothing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import mnistkit
from mnistkit import rundir as runs
from mnistkit.cli import main
from mnistkit.models import create_model
from mnistkit.runconfig import RETIRED_RECIPE_FIELDS
from mnistkit.training.runner import train

# What the seed recipes' recipe_settings held for each retired field.
OLD_SETTINGS = {
    "epoch_fraction": 1.0,
    "eval_batch_size": 256,
    "loss": "categorical cross-entropy on softmax outputs",
    "preprocessing": "pixels / 255, float32",
}


@pytest.fixture
def old_run(tiny_registered, tmp_path):
    run = train("seed-lenet", out=tmp_path / "old", epochs=1, dataset="tiny",
                data_dir=tiny_registered, device="cpu", quiet=True)  # fmt: skip
    path = run.path / "config.json"
    config = json.loads(path.read_text())
    config["recipe_settings"].update(OLD_SETTINGS)
    path.write_text(json.dumps(config, indent=2))
    return run.path


def test_every_retired_field_is_in_the_old_config():
    assert set(OLD_SETTINGS) == set(RETIRED_RECIPE_FIELDS)


def test_an_old_run_evaluates_reports_exports_and_predicts(old_run, tiny_registered, tmp_path,
                                                           tiny_arrays, capsys):  # fmt: skip
    common = ["--data-dir", str(tiny_registered), "--quiet"]
    assert main(["evaluate", str(old_run), "--report", *common]) == 0
    assert (old_run / "report.html").is_file()
    assert main(["compare", str(old_run), "--json", "--quiet"]) == 0
    assert main(["export", str(old_run), "--quiet"]) == 0
    (xte, yte) = tiny_arrays[1]
    image = tmp_path / "digit.png"
    Image.fromarray(xte[0]).save(image)
    capsys.readouterr()
    assert main(["predict", str(old_run), str(image), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)
    prediction = mnistkit.load(old_run).predict(xte[0])
    assert 0 <= prediction.label <= 9 and np.isclose(sum(prediction.probabilities), 1.0)


def test_resuming_an_old_run_is_one_line_that_says_why(old_run, tiny_registered, capsys):
    before = {p.name: p.read_bytes() for p in old_run.iterdir()}
    capsys.readouterr()
    code = main(["train", "--resume", str(old_run), "--epochs", "2", "--device", "cpu",
                 "--data-dir", str(tiny_registered), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "earlier mnistkit" in err and all(name in err for name in OLD_SETTINGS)
    assert {p.name: p.read_bytes() for p in old_run.iterdir()} == before


@pytest.mark.parametrize(
    "model, kwargs, built",
    [  # the fast recipe before its strided stem; best before its depth and committee
        ("fast-cnn", {"widths": [8, 16, 32], "tta": 5}, {"widths": (8, 16, 32), "stem": "pool"}),
        ("best-cnn", {"widths": [4, 8, 8], "dropout": 0.25, "tta": 5},
         {"widths": (4, 8, 8), "members": 1, "depth": 1}),
    ],
)  # fmt: skip
def test_an_old_run_gets_the_model_defaults_of_its_time(old_run, model, kwargs, built):
    """Arguments an old config.json left out mean what the constructor took for them then;
    a run written now that leaves them out means today's defaults."""
    torch.manual_seed(0)
    net = create_model(model, **built)
    config = runs.read_config(old_run)
    config.update(model=model, model_kwargs=kwargs)
    runs.save_run(old_run, net, config, runs.read_metrics(old_run), [])
    loaded, _ = runs.load_model(old_run)
    assert repr(loaded) == repr(net)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k

    for key in OLD_SETTINGS:  # as this version writes it
        del config["recipe_settings"][key]
    today = create_model(model)
    runs.save_run(old_run, today, {**config, "model_kwargs": {}}, runs.read_metrics(old_run), [])
    assert repr(runs.load_model(old_run)[0]) == repr(today)
