"""Bad input met across the commands: one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mnistkit.cli import main
from mnistkit.training.runner import train


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code: int, err: str, *phrases: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in err, err


@pytest.fixture
def tiny_run(tiny_registered, tmp_path) -> Path:
    out = tmp_path / "run"
    train("seed-dense512", out=out, epochs=1, dataset="tiny", data_dir=tiny_registered,
          device="cpu", quiet=True)  # fmt: skip
    return out


@pytest.mark.parametrize("target", ["a-file", "/dev/null"])
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_out_naming_a_file_is_refused(capsys, tmp_path, target, overwrite):
    out = tmp_path / target if target == "a-file" else Path(target)
    if target == "a-file":
        out.write_text("mine")
    code, _, err = run_cli(capsys, "train", "--recipe", "seed-dense512", "--out", out, *overwrite)
    assert_one_line(code, err, f"--out {str(out)!r} is not a folder")
    if target == "a-file":
        assert out.read_text() == "mine"


def test_evaluate_on_a_file_says_it_is_not_a_run_directory(capsys, tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    code, _, err = run_cli(capsys, "evaluate", tmp_path / "metrics.json")
    assert_one_line(code, err, "is a file, not a run directory")


def test_a_config_with_a_bad_model_argument_is_named_by_predict(capsys, tiny_run, tmp_path):
    """config.json's model arguments are checked by the model that takes them: a ``tta`` of
    -7 names the file and the value, and predict writes one line."""
    config = json.loads((tiny_run / "config.json").read_text())
    config.update(model="fast-cnn", model_kwargs={"tta": -7})
    (tiny_run / "config.json").write_text(json.dumps(config))
    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    code, _, err = run_cli(capsys, "predict", tiny_run, tmp_path / "digit.png")
    assert_one_line(code, err, "config.json", "tta must lie in 1..5, not -7", "edited by hand")


def test_predict_on_a_fifo_refuses_it_and_reads_the_rest(tiny_run, tmp_path):
    """A FIFO named directly (or any file that is not a regular one) is one error row, at
    once: opening it for reading would wait for a writer forever."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    Image.new("L", (28, 28), 255).save(tmp_path / "digit.png")
    done = subprocess.run([sys.executable, "-m", "mnistkit", "predict", str(tiny_run), str(fifo),
                           str(tmp_path / "digit.png"), "--json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    rows = json.loads(done.stdout)
    assert "is not a regular file (a FIFO" in rows[0]["error"]
    assert "error" not in rows[1] and set(rows[1]["number"]) <= set("0123456789")
