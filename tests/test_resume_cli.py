"""Interruptions of ``mnistkit train`` as a user meets them: real processes and real signals.

Each test runs ``tests/train_driver.py`` (the CLI with the synthetic data set and the
``resume-test`` recipe: dropout, augmentation, one-cycle schedule, EMA) in a subprocess,
stops it (Ctrl-C, SIGTERM, ``kill -9``), resumes it with ``mnistkit train --resume`` and
compares the result with an uninterrupted run, bit for bit. ``MNISTKIT_KILL_POINTS`` sets how many
``kill -9`` points the random test tries (default 6), ``MNISTKIT_KILL_SEED`` its seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, make_arrays, write_idx_dir
from test_resume import STEPS_PER_EPOCH, TOTAL_STEPS, assert_same_run

from mnistkit import rundir as runs
from mnistkit import sealed

DRIVER = ROOT / "tests" / "train_driver.py"
EPOCHS = TOTAL_STEPS // STEPS_PER_EPOCH


def command(data_dir: Path, out: Path, resume: bool = False) -> list[str]:
    where = ["--resume", str(out)] if resume else ["--recipe", "resume-test", "--out", str(out)]
    return [sys.executable, str(DRIVER), "train", *where, "--dataset", "tiny", "--device", "cpu",
            "--threads", "1", "--quiet", "--data-dir", str(data_dir)]  # fmt: skip


def env(data_dir: Path, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("MNISTKIT_FAULT")}
    return {**e, "TINY_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1", **extra}


def run(data_dir: Path, out: Path, resume: bool = False, **extra: str):
    return subprocess.run(command(data_dir, out, resume), env=env(data_dir, **extra), capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tiny")
    write_idx_dir(data_dir, make_arrays())
    out = tmp_path_factory.mktemp("reference") / "run"
    done = run(data_dir, out)
    assert done.returncode == 0, done.stderr
    return data_dir, out


def assert_resume_hint(stderr: str, out: Path) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert f"mnistkit train --resume {out}" in lines[0]


def test_ctrl_c_mid_epoch_saves_says_how_to_resume_exits_130(reference, tmp_path):
    data_dir, ref = reference
    out = tmp_path / "run"
    k = STEPS_PER_EPOCH + 6  # the middle of epoch 2
    stopped = run(data_dir, out, MNISTKIT_FAULT=f"SIGINT@{k}")
    assert stopped.returncode == 130, stopped.stderr
    assert_resume_hint(stopped.stderr, out)
    state = json.loads(sealed.unpack(out / runs.CHECKPOINT, "checkpoint")[1]["state"])
    assert (state["epoch"], state["step"]) == (1, 7)  # saved mid-epoch, right where it stopped
    resumed = run(data_dir, out, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(ref, out)


def test_sigterm_from_outside_exits_143_and_resumes_exactly(reference, tmp_path):
    data_dir, ref = reference
    out = tmp_path / "run"
    proc = subprocess.Popen(command(data_dir, out), env=env(data_dir, MNISTKIT_STEP_SLEEP="0.03"),
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    while not (out / "config.json").exists() and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # training under way: 39 steps of at least 30 ms each
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert_resume_hint(stderr, out)
    resumed = run(data_dir, out, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(ref, out)


def test_a_nan_loss_stops_at_once_exit_1_and_the_last_checkpoint_resumes(reference, tmp_path):
    """A loss that becomes NaN in epoch 2 stops the run at that epoch's end (13 steps, under
    the 25 between checks), before its checkpoint: one line, exit 1, and the checkpoint of
    epoch 1, from which --resume ends as if nothing had happened."""
    data_dir, ref = reference
    out = tmp_path / "run"
    done = run(data_dir, out, MNISTKIT_FAULT=f"NAN@{STEPS_PER_EPOCH + 4}")
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"mnistkit: error: the training loss became nan in epoch 2 (by step {STEPS_PER_EPOCH}); "
        f"training stopped, and {str(out)!r} keeps its last checkpoint (1 epochs done). "
        f"A learning rate below 0.003 may avoid it."
    ]
    assert steps_done(out) == (1, STEPS_PER_EPOCH) and not (out / runs.METRICS).exists()
    resumed = run(data_dir, out, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(ref, out)


def test_a_second_training_into_a_busy_folder_is_refused(reference, tmp_path):
    """While one process trains into a folder, a second one told to overwrite it, or to resume
    it, gets one line and exit 2 and writes nothing; the first one's run is intact."""
    data_dir, ref = reference
    out, gate = tmp_path / "run", tmp_path / "go-on"
    first = subprocess.Popen(command(data_dir, out), env=env(data_dir, MNISTKIT_STEP_GATE=str(gate)),
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    while not (out / "config.json").exists() and first.poll() is None:
        time.sleep(0.02)
    config = (out / "config.json").read_text()
    others = [command(data_dir, out) + ["--overwrite", "--seed", "7"],
              command(data_dir, out, resume=True)]  # fmt: skip
    done = [subprocess.run(argv, env=env(data_dir), capture_output=True, text=True, timeout=300)
            for argv in others]  # fmt: skip
    still_training = first.poll() is None  # its first step waits for the gate
    gate.touch()
    _, first_err = first.communicate(timeout=300)
    assert still_training and first.returncode == 0, first_err
    for other in done:
        assert other.returncode == 2, other.stderr
        assert other.stderr.strip().splitlines() == [
            f"mnistkit: error: {str(out)!r} is in use by another mnistkit process (a training, a "
            f"report or an export); wait for it to end or choose another --out."
        ]
    assert json.loads(config)["seed"] == 0
    assert_same_run(ref, out)  # the first one's run, whole: the others wrote nothing


def steps_done(out: Path) -> tuple[int, int]:
    """(epochs finished, global steps done) by the checkpoint in ``out``, (0, 0) without one."""
    if not (out / runs.CHECKPOINT).is_file():
        return 0, 0
    state = json.loads(sealed.unpack(out / runs.CHECKPOINT, "checkpoint")[1]["state"])
    return state["epoch"], state["epoch"] * STEPS_PER_EPOCH + state["step"]


def pick_fault(rng: random.Random, out: Path) -> tuple[str, dict[str, str]]:
    """A random kill point in what this process has left to do."""
    epochs, done = steps_done(out)
    kind = rng.choice(["step", "step", "write", "rename", "async"])
    if kind == "step":
        return f"SIGKILL@{rng.randrange(TOTAL_STEPS - done + 1)}", {}
    writes = 1 + (EPOCHS - epochs) + 4  # config.json, epoch-end checkpoints, the run's 4 files
    if kind == "write":
        frac = rng.choice([0.0, 0.5, 0.999, 1.0])
        return f"KILLWRITE@{rng.randint(1, writes)}:{frac}", {}
    if kind == "rename":
        return f"KILLRENAME@{rng.randint(1, writes)}", {}
    return f"ASYNC@{rng.uniform(0.5, 3.0):.2f}", {"MNISTKIT_STEP_SLEEP": "0.02"}


def test_a_kill_right_after_the_last_rename_leaves_the_finished_run(reference, tmp_path):
    """Killed after metrics.json, its last file, was renamed into place: the run is whole, and a
    --resume of it says it already ran (what the random chains below must expect too)."""
    data_dir, ref = reference
    out = tmp_path / "run"
    last = 1 + EPOCHS + 4  # config.json, a checkpoint per epoch, the run's 4 files
    killed = run(data_dir, out, MNISTKIT_FAULT=f"KILLRENAME@{last}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert_same_run(ref, out)
    again = run(data_dir, out, resume=True)
    assert again.returncode == 2 and f"already ran {EPOCHS} epochs" in again.stderr


def test_kill_9_at_random_points_always_resumes_exactly(reference, tmp_path):
    """``kill -9`` anywhere (inside a step, mid-write of any file, right after a rename, at a
    random moment from outside): the next ``--resume`` works, and every chain of kills and
    resumes ends with the weights and figures of the uninterrupted run."""
    data_dir, ref = reference
    want = int(os.environ.get("MNISTKIT_KILL_POINTS", "6"))
    rng = random.Random(int(os.environ.get("MNISTKIT_KILL_SEED", "0")))
    kills: list[str] = []
    chains = 0
    while len(kills) < want:
        chains += 1
        out = tmp_path / f"chain{chains}"
        first, finished = True, False
        while len(kills) < want:
            fault, extra = pick_fault(rng, out)
            resume = not first and (out / "config.json").is_file()
            if fault.startswith("ASYNC@"):
                proc = subprocess.Popen(command(data_dir, out, resume), env=env(data_dir, **extra),
                                        stderr=subprocess.PIPE, text=True)  # fmt: skip
                try:
                    proc.wait(timeout=float(fault[6:]))
                except subprocess.TimeoutExpired:
                    proc.kill()  # SIGKILL
                _, stderr = proc.communicate(timeout=120)
                code = proc.returncode
            else:
                done = run(data_dir, out, resume, MNISTKIT_FAULT=fault, **extra)
                code, stderr = done.returncode, done.stderr
            first = False
            if code == 0:
                finished = True  # the kill point lay beyond the end of the run
                break
            assert code == -signal.SIGKILL, (fault, stderr)
            kills.append(fault)
            if (out / runs.METRICS).is_file():  # killed after the rename of its last file
                finished = True
                break
            if not (out / "config.json").is_file():  # killed before the run existed
                first = True
                continue
        if not finished:
            resumed = run(data_dir, out, resume=(out / "config.json").is_file())
            assert resumed.returncode == 0, (kills, resumed.stderr)
        assert_same_run(ref, out)
        assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    print(f"\n{len(kills)} kill -9 points in {chains} chains, all resumed exactly: {kills}")
