"""The training commands end to end through ``mnistkit.cli.main``."""

from __future__ import annotations

import json

import pytest

from mnistkit.cli import main
from mnistkit.models import MODELS
from mnistkit.recipes import RECIPES


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_models_and_summary(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    assert all(name in out for name in [*MODELS, *RECIPES])
    assert "675,370" in out and "001_9183f890491e7652.txt" in out
    code, out, _ = run_cli(capsys, "summary", "deep-convnet")
    assert code == 0 and "295,168" in out and "Total params: 675,370" in out


def test_train_evaluate_reproduce(capsys, tiny_registered, tmp_path):
    common = ["--data-dir", tiny_registered, "--quiet"]
    code, out, err = run_cli(capsys, "train", "--recipe", "seed-dense512", "--epochs", "2",
                             "--dataset", "tiny", "--device", "cpu", "--out", tmp_path / "r",
                             *common)  # fmt: skip
    assert code == 0, err
    assert "test accuracy" in out and (tmp_path / "r" / "metrics.json").is_file()

    code, out, err = run_cli(capsys, "evaluate", tmp_path / "r", "--json", *common)
    assert code == 0, err
    res = json.loads(out)
    assert len(res["per_class"]) == 10 and 0 <= res["test_accuracy"] <= 1
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert res["test_accuracy"] == pytest.approx(saved["test_accuracy"])
    code, out, _ = run_cli(capsys, "evaluate", tmp_path / "r", *common)
    assert code == 0 and "precision" in out and "gap" in out

    code, out, err = run_cli(capsys, "reproduce", "seed-dense512", "seed-lenet", "--epochs", "1",
                             "--dataset", "tiny", "--device", "cpu", "--out-dir", tmp_path / "rep",
                             *common)  # fmt: skip
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["recipe", "seed", "file"]
    assert lines[1].startswith("seed-dense512") and "000" in lines[1] and "97.83 %" in lines[1]
    assert lines[2].startswith("seed-lenet")


@pytest.mark.parametrize(
    "argv, match",
    [
        (["train", "--recipe", "nope"], "seed-dense512"),
        (["train", "--recipe", "seed-dense512", "--epochs", "0"], "epochs"),
        (["train", "--recipe", "seed-dense512", "--epochs", "-2"], "epochs"),
        (["train", "--recipe", "seed-dense512", "--batch-size", "0"], "batch size"),
        (["train", "--recipe", "seed-dense512", "--lr", "inf"], "positive finite number, not inf"),
        (["train", "--recipe", "seed-dense512", "--lr", "nan"], "positive finite number, not nan"),
        (["train", "--recipe", "seed-dense512", "--lr", "1e999"], "not inf"),
        (
            ["train", "--recipe", "seed-dense512", "--epochs", "99999999999999999999"],
            "epochs must be a positive integer no more than 10,000",
        ),
        (
            ["train", "--recipe", "seed-dense512", "--threads", "10000000000000000000000"],
            "threads must be a positive integer no more than 1,024",
        ),
        (
            ["train", "--recipe", "seed-dense512", "--seed", "999999999999999999999999"],
            "the seed must be an integer from -9223372036854775808 to 18446744073709551615",
        ),
        (["train"], "--recipe"),
        (["summary", "nope"], "deep-convnet"),
        (["reproduce", "seed-dense512", "nope"], "unknown recipe"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, match):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *argv, "--quiet")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and match in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written, not even runs/


def test_evaluate_missing_foreign_truncated(capsys, tmp_path, tiny_registered):
    code, _, err = run_cli(capsys, "evaluate", tmp_path / "nowhere")
    assert code == 2 and "does not exist" in err and len(err.splitlines()) == 1
    (tmp_path / "foreign").mkdir()
    code, _, err = run_cli(capsys, "evaluate", tmp_path / "foreign")
    assert code == 2 and "not a mnistkit run" in err
    code, _, _ = run_cli(capsys, "train", "--recipe", "seed-dense512", "--epochs", "1",
                         "--dataset", "tiny", "--device", "cpu", "--out", tmp_path / "r",
                         "--data-dir", tiny_registered, "--quiet")  # fmt: skip
    weights = tmp_path / "r" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    code, _, err = run_cli(capsys, "evaluate", tmp_path / "r", "--data-dir", tiny_registered)
    assert code == 2 and "truncated" in err and len(err.splitlines()) == 1
