"""Interrupted training resumes exactly; faults on disk are one clear line, never damage.

In-process: a real SIGINT/SIGTERM delivered at many points (every kind of place a run can
stand: an epoch's first, middle and last step, between epochs, after the last epoch, while
writing the run files), then ``train(resume=...)`` must end with exactly the weights, metrics
and history of a run never stopped. The subprocess tests (CLI, exit codes, ``kill -9``) are
in ``test_resume_cli.py``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import make_arrays, write_idx_dir
from train_driver import register_tiny, resume_recipe

from mnistkit import data, fileio
from mnistkit import rundir as runs
from mnistkit.cli import main
from mnistkit.errors import MnistkitError, TrainingInterrupted, WriteError
from mnistkit.training import loop as engine
from mnistkit.training import resume
from mnistkit.training.runner import train

TIMING = {"train_seconds", "total_seconds", "examples_per_second"}
STEPS_PER_EPOCH = 13  # 200 tiny images in batches of 16
TOTAL_STEPS = 3 * STEPS_PER_EPOCH


def run_tiny(data_dir: Path, **kw):
    kw.setdefault("quiet", True)
    kw.setdefault("device", "cpu")
    if "resume" not in kw:
        kw["recipe"] = resume_recipe()
    return train(kw.pop("recipe", None), dataset="tiny", data_dir=data_dir, **kw)


def assert_same_run(a: Path, b: Path) -> None:
    """Same weights (every tensor bit for bit), metrics and history but for the clock."""
    wa, _ = runs.load_model(a)
    wb, _ = runs.load_model(b)
    sa, sb = wa.state_dict(), wb.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    ma, mb = runs.read_metrics(a), runs.read_metrics(b)
    assert {k: v for k, v in ma.items() if k not in TIMING} == {
        k: v for k, v in mb.items() if k not in TIMING
    }
    ha, hb = runs.read_history(a), runs.read_history(b)
    assert [{**r, "seconds": ""} for r in ha] == [{**r, "seconds": ""} for r in hb]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The synthetic data set, registered as "tiny", and the uninterrupted run that every
    interrupted one must match."""
    data_dir = tmp_path_factory.mktemp("tiny")
    write_idx_dir(data_dir, make_arrays())
    before = data.DATASETS.get("tiny")
    register_tiny(data_dir)
    out = tmp_path_factory.mktemp("straight") / "run"
    run_tiny(data_dir, out=out)
    yield data_dir, out
    if before is None:
        data.DATASETS.pop("tiny", None)
    else:
        data.DATASETS["tiny"] = before


def signal_at_step(monkeypatch, k: int, sig: int = signal.SIGINT) -> None:
    """Deliver ``sig`` to this process just before training step ``k`` (from 0)."""
    real, calls = engine.train_step, [0]

    def step(*args, **kwargs):
        if calls[0] == k:
            os.kill(os.getpid(), sig)
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_step", step)


# Step k: the signal comes during step k, so the run stops before step k + 1.
POINTS = [0, 5, STEPS_PER_EPOCH - 2, STEPS_PER_EPOCH - 1, STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH + 6,
          TOTAL_STEPS - 1]  # fmt: skip


@pytest.mark.parametrize("k", POINTS)
def test_signal_mid_run_then_resume_is_exact(straight, tmp_path, monkeypatch, k):
    data_dir, reference = straight
    out = tmp_path / "run"
    sig = signal.SIGTERM if k % 2 else signal.SIGINT
    # What the handlers were: SIGINT is SIG_IGN, not Python's handler, when the suite runs as a
    # background job of a non-interactive shell (`make test &`), as POSIX shells start them.
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with monkeypatch.context() as m:
        signal_at_step(m, k, sig)
        with pytest.raises(TrainingInterrupted) as e:
            run_tiny(data_dir, out=out)
    assert e.value.exit_status == 128 + sig and Path(e.value.run_dir) == out
    assert {s: signal.getsignal(s) for s in before} == before  # handlers restored
    assert not (out / runs.METRICS).exists() and (out / runs.CHECKPOINT).is_file()
    state = resume.load_checkpoint(out, *_model_and_optimizer())[1]
    done = state["epoch"] * STEPS_PER_EPOCH + state["step"]
    assert done == min(k + 1, TOTAL_STEPS)  # stopped right after the step the signal hit
    run_tiny(data_dir, resume=out)
    assert_same_run(reference, out)


def _model_and_optimizer():
    from mnistkit.models import create_model
    from mnistkit.training.optim import create_optimizer

    rec = resume_recipe()
    model = create_model(rec.model, **rec.model_kwargs)
    return model, create_optimizer(rec.optimizer, model.parameters(), rec.lr)


def test_signal_while_writing_the_run_files_then_resume_finishes_it(straight, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    data_dir, reference = straight
    out = tmp_path / "run"
    real = fileio.write_text_atomic

    def history_then_signal(path, text):  # the signal lands between two of the run's files
        real(path, text)
        os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as m:
        m.setattr(runs, "write_text_atomic", history_then_signal)
        with pytest.raises(TrainingInterrupted):
            run_tiny(data_dir, out=out)
    assert (out / runs.WEIGHTS).is_file() and not (out / runs.METRICS).exists()
    run_tiny(data_dir, resume=out)
    assert_same_run(reference, out)
    with pytest.raises(MnistkitError, match="--epochs"):  # now it is finished
        run_tiny(data_dir, resume=out)


def test_killed_before_the_first_checkpoint_resumes_from_the_start(straight, tmp_path):
    data_dir, reference = straight
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_bytes((reference / "config.json").read_bytes())
    (out / ".checkpoint.safetensors.abc.tmp").write_bytes(b"half a file")
    run_tiny(data_dir, resume=out)
    assert_same_run(reference, out)
    assert not any(fileio.is_temp(p.name) for p in out.iterdir())


def test_edited_config_or_damaged_checkpoint_is_refused(straight, tmp_path, monkeypatch):
    data_dir, _ = straight
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        signal_at_step(m, 20)
        with pytest.raises(TrainingInterrupted):
            run_tiny(data_dir, out=out)
    good = (out / "config.json").read_text()
    config = json.loads(good)
    (out / "config.json").write_text(json.dumps({**config, "seed": 1}))
    with pytest.raises(MnistkitError, match="differs from its checkpoint in seed"):
        run_tiny(data_dir, resume=out)
    (out / "config.json").write_text(json.dumps({**config, "batch_size": "16"}))
    with pytest.raises(MnistkitError, match="'batch_size' must be an integer"):
        run_tiny(data_dir, resume=out)
    (out / "config.json").write_text(good)
    ckpt = out / runs.CHECKPOINT
    blob = bytearray(ckpt.read_bytes())
    blob[-5] ^= 0x10
    ckpt.write_bytes(bytes(blob))
    with pytest.raises(MnistkitError, match="SHA-256 seal"):
        run_tiny(data_dir, resume=out)
    assert not (out / runs.METRICS).exists()


def test_full_disk_is_one_line_before_training(straight, tmp_path, monkeypatch, capsys):
    data_dir, _ = straight

    class Usage:
        free = 10_000

    monkeypatch.setattr(resume.shutil, "disk_usage", lambda p: Usage())
    with pytest.raises(WriteError, match="MiB are free"):
        run_tiny(data_dir, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_read_only_folder_is_one_line_exit_2(straight, tmp_path, monkeypatch, capsys):
    data_dir, _ = straight
    monkeypatch.chdir(tmp_path)

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(resume.tempfile, "mkstemp", refuse)
    code = main(["train", "--recipe", "seed-dense512", "--dataset", "tiny", "--device", "cpu",
                 "--data-dir", str(data_dir), "--out", "ro", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "cannot write to the run directory ro (Permission denied)" in err


def test_disk_full_during_training_keeps_the_last_checkpoint(straight, tmp_path, monkeypatch):
    """ENOSPC on the second epoch's checkpoint: one line, exit 2, the first one intact."""
    data_dir, reference = straight
    out = tmp_path / "run"
    real_fsync, saved = os.fsync, []
    real_save = resume.save_checkpoint

    def save(path, *args, **kwargs):
        if (Path(path) / runs.CHECKPOINT).is_file():
            saved.append((Path(path) / runs.CHECKPOINT).read_bytes())
            monkeypatch.setattr(os, "fsync", no_space)
        return real_save(path, *args, **kwargs)

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(resume, "save_checkpoint", save)
    with pytest.raises(WriteError, match="No space left on device"):
        run_tiny(data_dir, out=out)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (out / runs.CHECKPOINT).read_bytes() == saved[0]  # the epoch-1 checkpoint, intact
    assert not any(fileio.is_temp(p.name) for p in out.iterdir())
    monkeypatch.undo()
    run_tiny(data_dir, resume=out)
    assert_same_run(reference, out)
