"""Training on several processes (mnistkit.training.distributed): ranks on 127.0.0.1 over gloo.

Each rank is a real process with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR...),
started here directly or by ``mnistkit train --nproc``; one CPU thread per rank.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_arrays, tiny_dataset, write_idx_dir

from mnistkit import data
from mnistkit import rundir as runs
from mnistkit.cli import main
from mnistkit.errors import MnistkitError
from mnistkit.training import distributed, launch
from mnistkit.training.ensemble import train_ensemble
from mnistkit.training.runner import train

WORKER = Path(__file__).with_name("dist_worker.py")
TIMEOUT_S = 120  # per rank; a hang fails the test instead of blocking the suite


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(args: list[str], world: int = 2, **env: str) -> list[subprocess.Popen]:
    """``python tests/dist_worker.py ARGS`` as ranks 0..world-1 of one job."""
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
            "WORLD_SIZE": str(world), "OMP_NUM_THREADS": "1", "MNISTKIT_DIST_TIMEOUT": "60", **env}  # fmt: skip
    return [
        subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(base, RANK=str(r), LOCAL_RANK=str(r)),
        )  # fmt: skip
        for r in range(world)
    ]


def start_nodes(args: list[str], nodes: int = 2) -> list[subprocess.Popen]:
    """The README's multi-machine command, once per "machine", all on 127.0.0.1: torchrun
    agents meeting at one rendezvous endpoint, one rank each, running the worker with ARGS."""
    endpoint = f"127.0.0.1:{free_port()}"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes),
                "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
                "--rdzv-id", "mnistkit-test"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MNISTKIT_DIST_TIMEOUT": "60"}
    return [
        subprocess.Popen(
            [*torchrun, str(WORKER), *args],
            text=True,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for _ in range(nodes)
    ]


def finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    """Wait for every rank (killing any still alive after TIMEOUT_S): (status, out, err)."""
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        results.append((p.returncode, out, err))
    return results


@pytest.fixture
def tiny_cli(tmp_path: Path, tiny_registered):
    """The argv prefix to run the CLI on the synthetic set in a rank, with its own cache."""
    folder = tiny_registered
    return lambda die_at=-1, mode="die": ["cli", str(folder), str(die_at), mode, "--",
                                          "--data-dir", str(folder), "--cache-dir",
                                          str(tmp_path / "cache")]  # fmt: skip


def test_ddp_steps_equal_one_process_with_the_global_batch(tmp_path: Path):
    """The gradients of the slices, weighted by their sizes (18 + 19, then 13 + 13 for the
    last batch), give the same update as the whole batch in one process."""
    verdicts_file = tmp_path / "verdicts.json"
    results = finish(start_ranks(["step", str(verdicts_file)]))
    assert all(code == 0 for code, _, _ in results), results
    verdicts = json.loads(verdicts_file.read_text())
    assert set(verdicts) == {"conv, step 1", "conv, step 3", "mlp, step 1", "mlp, step 3"}
    for name, relative_difference in verdicts.items():
        assert relative_difference < 1e-5, name


def test_two_ranks_train_fast_into_the_run_directory_of_one_process(tmp_path: Path, monkeypatch):
    """Two "machines" on 127.0.0.1 (the README's torchrun --nnodes command) train `fast`
    (batch norm, channels-last, one-cycle, label smoothing) for 200 steps of a global batch of
    16 on 1,600 synthetic images: the run directory of one process, written by rank 0 alone."""
    folder = tmp_path / "idx1600"
    monkeypatch.setitem(
        data.DATASETS, "tiny", tiny_dataset(write_idx_dir(folder, make_arrays(1600)))
    )
    argv = ["train", "--recipe", "fast", "--dataset", "tiny", "--device", "cpu", "--epochs", "2",
            "--batch-size", "16", "--threads", "1", "--data-dir", str(folder),
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    results = finish(
        start_nodes(["cli", str(folder), "-1", "-", "--", *argv, "--out", str(tmp_path / "two")])
    )
    assert [code for code, _, _ in results] == [0, 0], results
    # The rendezvous decides which machine holds rank 0; only that one speaks.
    (_, out0, err0), (_, out1, err1) = sorted(results, key=lambda r: r[1] == "")
    assert "test accuracy" in out0 and "epoch 2/2" in err0
    assert out1 == "" and err1 == ""

    one = train("fast", dataset="tiny", data_dir=folder, device="cpu", epochs=2, batch_size=16,
                threads=1, quiet=True, out=tmp_path / "one", cache_dir=tmp_path / "cache")  # fmt: skip
    two = tmp_path / "two"
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.path.iterdir())
    c1, c2 = runs.read_config(one.path), runs.read_config(two)
    assert (c1["processes"], c2["processes"]) == (1, 2)
    # The same settings; the temperature is fitted to each run's own model, as its weights are.
    outcome = ("processes", "temperature")
    assert {k: v for k, v in c1.items() if k not in outcome} == {
        k: v for k, v in c2.items() if k not in outcome
    }
    assert c2["temperature"] > 0 and c2["calibration"]["images"] == 53  # 1/30 of 1,600
    m1, m2 = runs.read_metrics(one.path), runs.read_metrics(two)
    assert set(m1) == set(m2) == set(runs.METRIC_KEYS)
    h1, h2 = runs.read_history(one.path), runs.read_history(two)
    assert [r["epoch"] for r in h1] == [r["epoch"] for r in h2] == ["1", "2"]
    # Batch norm over 8 images per rank instead of 16: not the same numbers, the same learning.
    assert m1["test_accuracy"] > 0.9 and m2["test_accuracy"] > 0.9
    w2, _ = runs.load_model(two)
    assert w2.state_dict().keys() == one.model.state_dict().keys()


@pytest.mark.parametrize("mode", ["die", "hang"])
def test_a_lost_rank_stops_the_others_with_one_clear_line(tmp_path: Path, tiny_cli, mode):
    argv = ["train", "--recipe", "seed-dense512", "--dataset", "tiny", "--device", "cpu",
            "--epochs", "50", "--batch-size", "32", "--out", str(tmp_path / "run")]  # fmt: skip
    procs = start_ranks([*tiny_cli(die_at=5, mode=mode), *argv], MNISTKIT_DIST_TIMEOUT="3")
    try:
        code, _, err = finish(procs[:1])[0]
    finally:
        procs[1].kill()
        procs[1].communicate()
    assert code == 1, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("mnistkit: error: rank 0 lost the other ranks"), err
    assert ("closed" if mode == "die" else "no answer within 3 s") in lines[-1]
    assert "Traceback" not in err
    assert (tmp_path / "run" / "config.json").is_file()
    assert not (tmp_path / "run" / "metrics.json").exists()  # not a finished run


def test_a_batch_smaller_than_the_world_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(MnistkitError, match="a batch of 3 cannot be split over 4 processes"):
        distributed.setup(torch.device("cpu"), 3)


def test_nproc_passes_the_same_command_line_to_every_rank(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(launch, "launch", lambda n, argv, threads: seen.update(n=n, argv=argv) or 0)
    assert main(["--quiet", "train", "--recipe", "fast", "--nproc", "3", "--epochs", "2",
                 "--overwrite", "--out", "r", "--lr", "0.5"]) == 0  # fmt: skip
    assert seen["n"] == 3
    assert sorted(seen["argv"]) == sorted(["train", "--quiet", "--recipe", "fast", "--epochs", "2",
                                           "--overwrite", "--out", "r", "--lr", "0.5"])  # fmt: skip
    assert main(["train", "--recipe", "fast", "--nproc", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "mnistkit: error: --nproc must be a positive number of processes, not 0."
    )


def test_launch_reports_an_error_of_the_ranks_once(capfd):
    """Every rank fails the same way; rank 0 says it, the launcher adds nothing."""
    assert launch.launch(2, ["train", "--recipe", "seed-dense512", "--val-split", "2"]) == 2
    err = capfd.readouterr().err
    assert err.strip().splitlines() == [
        "mnistkit: error: the validation split must lie in [0, 1), not 2.0."
    ]


@pytest.mark.mnist
def test_nproc_2_trains_on_mnist_from_the_command_line(tmp_path: Path):
    """`mnistkit train --nproc 2` on real MNIST: one epoch of seed-dense512, 235 global steps.

    (`fast` on all of MNIST takes minutes on this 2-core machine, most of it the final
    evaluation: 5 test-time views of 70,000 images.)"""
    out = tmp_path / "dense"
    proc = subprocess.run([sys.executable, "-m", "mnistkit", "train", "--nproc", "2", "--recipe",
                           "seed-dense512", "--epochs", "1", "--batch-size", "256", "--device", "cpu",
                           "--out", str(out)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("test accuracy") == 1 and proc.stderr.count("epoch 1/1") == 1
    metrics = runs.read_metrics(out)
    # One epoch at batch 256 (the seed reports 97.8 % after 5 epochs at batch 128).
    assert metrics["test_accuracy"] > 0.93
    assert runs.read_config(out)["processes"] == 2
    assert {runs.CONFIG, runs.WEIGHTS, runs.METRICS, runs.HISTORY} <= {
        p.name for p in out.iterdir()
    }


def test_an_ensemble_trains_one_member_per_rank(tmp_path: Path, monkeypatch, tiny_registered):
    """Rank 1 of 2 trains members 1 and 3 of 4, with their own seeds, as plain runs."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")  # no process group: the members are independent
    done = train_ensemble("seed-dense512", 4, tmp_path / "ens", seed=10, epochs=1,
                                      dataset="tiny", data_dir=tiny_registered, device="cpu")  # fmt: skip
    assert [r.path.name for r in done] == ["member-1", "member-3"]
    assert sorted(p.name for p in (tmp_path / "ens").iterdir()) == ["member-1", "member-3"]
    configs = [runs.read_config(r.path) for r in done]
    assert [(c["seed"], c["processes"]) for c in configs] == [(11, 1), (13, 1)]
    assert runs.read_metrics(done[0].path)["test_accuracy"] > 0.5
