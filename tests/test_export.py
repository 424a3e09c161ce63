"""ONNX export: a valid, dynamic-batch model.onnx that agrees with torch, written atomically."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from serve_support import trained_run

from mnistkit.cli import main
from mnistkit.infer.export import OPSET, onnx_session, softmax, to_onnx
from mnistkit.rundir import weights_sha256
from mnistkit.training.runner import train

pytestmark = pytest.mark.mnist


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    src = trained_run(tmp_path_factory)
    dst = tmp_path_factory.mktemp("export") / "run"
    dst.mkdir()
    for name in ("config.json", "metrics.json", "model.safetensors"):
        shutil.copy(src / name, dst / name)
    return dst


def test_export_agrees_with_torch_on_mnist(run, mnist):
    res = to_onnx(run, n_check=1000)
    assert res.path == run / "model.onnx" and res.path.is_file()
    assert res.check_data == "MNIST test split" and res.checked == 1000
    assert res.argmax_agree == 1000 and res.max_abs_diff < 1e-4 and res.ok
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # atomic: no leftovers

    proto = onnx.load(str(res.path))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= OPSET >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["weights_sha256"] == weights_sha256(run) and meta["recipe"] == "seed-convnet"

    # dynamic batch: 1, 7 and 300 images through the same session
    session = onnx_session(res.path)
    x = mnist[1][0][:300].astype(np.float32).reshape(-1, 1, 28, 28) / 255
    for n in (1, 7, 300):
        (logits,) = session.run(None, {"image": x[:n]})
        assert logits.shape == (n, 10)
    assert (softmax(logits).argmax(1) == mnist[1][1][:300]).mean() > 0.95


def test_export_command_reports_the_check(run, capsys):
    assert main(["export", str(run), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    assert (
        "model.onnx" in out and "labels agree 2000/2000" in out and "max |p_onnx - p_torch|" in out
    )


def test_export_of_a_missing_run_is_exit_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope")]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs",
    [{"members": 2, "depth": 1}, {"stem": "stride", "stem_kernel": 5}, {"depth": 2, "members": 2}],
)
def test_ensembles_and_strided_stems_export(kwargs):
    """``best-cnn`` with two members (their mean, each with TTA) and ``fast-cnn`` with the
    strided stem (the ``fast`` recipe's 5x5) become ONNX graphs that compute what torch does."""
    import onnxruntime as ort
    import torch

    from mnistkit.infer.export import onnx_bytes
    from mnistkit.models import create_model

    torch.manual_seed(0)
    name = "best-cnn" if "members" in kwargs else "fast-cnn"
    model = create_model(name, widths=(4, 8, 8), **kwargs).eval()
    x = torch.rand(5, 1, 28, 28)
    session = ort.InferenceSession(onnx_bytes(model), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": x.numpy()})
    np.testing.assert_allclose(logits, model(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_export_checks_on_the_runs_own_data(tiny_registered, tmp_path, capsys):
    """The check images are the test split of the run's data set, from the --data-dir given
    (not MNIST from the default cache, which may mean a download)."""
    run = train("seed-dense512", out=tmp_path / "run", epochs=1, dataset="tiny",
                data_dir=tiny_registered, device="cpu", quiet=True).path  # fmt: skip
    capsys.readouterr()
    assert main(["export", str(run), "--data-dir", str(tiny_registered), "--quiet"]) == 0
    assert (
        "checked against torch on 50 tiny test split: labels agree 50/50" in capsys.readouterr().out
    )
