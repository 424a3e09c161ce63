"""The run directory: files and keys of docs/run-directory.md, round trip, and damaged or foreign runs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save as st_save

from mnistkit import rundir as runs
from mnistkit import sealed
from mnistkit.cli import main
from mnistkit.errors import MnistkitError
from mnistkit.training import resume
from mnistkit.training.runner import train


@pytest.fixture
def run(tiny_registered, tmp_path):
    return train("seed-lenet", out=tmp_path / "run", epochs=1, dataset="tiny",
                 data_dir=tiny_registered, device="cpu", quiet=True)  # fmt: skip


def test_files_and_keys(run):
    names = {p.name for p in run.path.iterdir()}
    assert {"config.json", "model.safetensors", "metrics.json", "history.csv"} <= names
    assert not any(n.endswith(".tmp") for n in names)
    metrics = runs.read_metrics(run.path)
    assert list(metrics) == list(runs.METRIC_KEYS)
    assert metrics["val_accuracy"] is None and metrics["recipe"] == "seed-lenet"
    config = runs.read_config(run.path)
    for key in ("recipe", "model", "model_kwargs", "optimizer", "lr", "batch_size", "epochs",
                "seed", "dataset", "data_sha256", "versions"):  # fmt: skip
        assert key in config, key
    header = (run.path / "history.csv").read_text().splitlines()[0]
    assert header == ",".join(runs.HISTORY_COLUMNS)
    assert b"pickle" not in (run.path / "model.safetensors").read_bytes()[:200]


def test_round_trip_same_predictions(run):
    model, config = runs.load_model(run.path)
    assert not model.training and config["model"] == "lenet"
    for k, v in run.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        # The trained copy is channels_last (another conv kernel), hence not bit-identical.
        ours, theirs = model(x), run.model.eval()(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert torch.equal(ours.argmax(1), theirs.argmax(1))


def test_missing_and_foreign_directories(tmp_path):
    with pytest.raises(MnistkitError, match="does not exist"):
        runs.load_model(tmp_path / "nowhere")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hello")
    with pytest.raises(MnistkitError, match="not a mnistkit run"):
        runs.load_model(tmp_path / "foreign")
    (tmp_path / "foreign" / "config.json").write_text(json.dumps({"lr": 1}))
    with pytest.raises(MnistkitError, match="names no model"):
        runs.load_model(tmp_path / "foreign")
    (tmp_path / "foreign" / "config.json").write_text("{not json")
    with pytest.raises(MnistkitError, match="JSON"):
        runs.load_model(tmp_path / "foreign")
    with pytest.raises(MnistkitError, match="metrics.json"):
        runs.read_metrics(tmp_path / "foreign")


def test_truncated_weights(run):
    path = run.path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(MnistkitError, match="truncated"):
        runs.load_model(run.path)
    path.write_bytes(b"")
    with pytest.raises(MnistkitError, match="truncated"):
        runs.load_model(run.path)


def test_weights_of_another_architecture(run, tiny_registered, tmp_path):
    other = train("seed-dense512", out=tmp_path / "other", epochs=1, dataset="tiny",
                  data_dir=tiny_registered, device="cpu", quiet=True)  # fmt: skip
    (run.path / "model.safetensors").write_bytes((other.path / "model.safetensors").read_bytes())
    with pytest.raises(MnistkitError, match="another architecture"):
        runs.load_model(run.path)


def test_checkpoint_is_one_sealed_file(run, tiny_registered):
    """One file, so a kill cannot pair new tensors with an old state; edits break its seal."""
    assert not (run.path / "checkpoint.json").exists()
    tensors, meta = sealed.unpack(run.path / runs.CHECKPOINT, "checkpoint")
    assert meta["format"] == resume.CKPT_FORMAT and json.loads(meta["state"])["epoch"] == 1
    assert {"rng.torch", "rng.shuffle"} <= set(tensors)
    state = json.loads(meta["state"])
    meta["state"] = json.dumps({**state, "epoch": 7})
    forged = st_save(tensors, metadata={**meta, "sha256": "0" * 64})
    (run.path / runs.CHECKPOINT).write_bytes(forged)
    with pytest.raises(MnistkitError, match="SHA-256 seal"):
        train(resume=run.path, epochs=9, quiet=True, data_dir=tiny_registered)


def test_save_run_rejects_other_metric_keys(run, tmp_path):
    with pytest.raises(ValueError, match="metrics keys"):
        runs.save_run(tmp_path / "x", run.model, runs.read_config(run.path), {"acc": 1.0}, [])


def test_the_lock_file_is_not_part_of_the_run(tiny_registered, tmp_path):
    """A training holds its folder (runs.hold); the empty lock file it leaves, as `kill -9`
    does too, neither makes the folder "hold files" nor stops a later run or --resume."""
    out = tmp_path / "run"
    out.mkdir()
    (out / runs.LOCK).touch()
    kw = {"epochs": 1, "dataset": "tiny", "data_dir": tiny_registered, "device": "cpu",
          "quiet": True}  # fmt: skip
    train("seed-dense512", out=out, **kw)
    assert (out / runs.LOCK).is_file() and runs.read_metrics(out)["epochs"] == 1
    with runs.hold(out):  # as another process training there would
        with pytest.raises(MnistkitError, match="is in use by another mnistkit process"):
            train("seed-dense512", out=out, overwrite=True, **kw)
        with pytest.raises(MnistkitError, match="is in use by another mnistkit process"):
            train(resume=out, epochs=2, **{k: v for k, v in kw.items() if k != "epochs"})
    assert runs.read_metrics(out)["epochs"] == 1  # untouched
    train(resume=out, epochs=2, **{k: v for k, v in kw.items() if k != "epochs"})
    assert runs.read_metrics(out)["epochs"] == 2


def test_a_run_dir_reads_its_files_without_torch(run):
    """config, metrics, history and the parameter count come from JSON, CSV and the
    safetensors header: a process that only reads a run never imports torch."""
    import subprocess
    import sys

    code = (
        "import sys, json; from mnistkit.rundir import RunDir\n"
        f"r = RunDir({str(run.path)!r})\n"
        "print(json.dumps([r.is_run(), r.is_finished(), r.config()['recipe'],\n"
        "  r.metrics()['test_accuracy'], len(r.history()), r.count_parameters(),\n"
        "  'torch' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    is_run, finished, recipe, acc, epochs, params, torch_loaded = json.loads(out.stdout)
    assert (is_run, finished, recipe, epochs, torch_loaded) == (True, True, "seed-lenet", 1, False)
    assert acc == run.metrics["test_accuracy"]
    learned = sum(p.numel() for p in run.model.parameters())
    assert params == learned  # BatchNorm statistics left out, every weight counted
    model, _ = runs.RunDir(run.path).load_model()
    assert runs.RunDir(run.path).weights_sha256() == runs.weights_sha256(run.path)
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(model(x), run.model(x), atol=1e-5)  # the memory layouts may differ


def test_a_folder_that_is_no_run(tmp_path):
    empty = runs.RunDir(tmp_path)
    assert not empty.is_run() and not empty.is_finished() and empty.history() == []
    assert empty.count_parameters() is None
    with pytest.raises(MnistkitError, match="not a mnistkit run directory"):
        empty.config()


def test_report_and_export_are_refused_while_a_training_holds_the_run(tiny_registered, tmp_path,
                                                                  capsys):  # fmt: skip
    """`evaluate --report` and `export` write into the run directory: while another process
    holds it (a training rewriting its weights), each is refused in one line and writes nothing;
    once it is free, both work."""
    out = train("seed-dense512", out=tmp_path / "run", epochs=1, dataset="tiny",
                data_dir=tiny_registered, device="cpu", quiet=True).path  # fmt: skip
    report = ["evaluate", str(out), "--report", "--data-dir", str(tiny_registered), "--quiet"]
    capsys.readouterr()
    with runs.hold(out):
        for argv in (report, ["export", str(out), "--quiet"]):
            assert main(argv) == 2
            assert capsys.readouterr().err.strip().splitlines() == [
                f"mnistkit: error: {str(out)!r} is in use by another mnistkit process (a "
                f"training, a report or an export); wait for it to end."
            ]
    assert not (out / "report.html").exists() and not (out / "model.onnx").exists()
    assert main(report) == 0 and (out / "report.html").is_file()
    assert main(["export", str(out), "--quiet"]) == 0 and (out / "model.onnx").is_file()
