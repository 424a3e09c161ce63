"""The default model: trained once into the cache on first use, then reused; two first uses
train it once; a failed training leaves nothing behind; ``mnistkit.load()``, ``mnistkit predict
IMAGE`` and ``mnistkit serve`` without a run directory use it. On the synthetic "tiny" set."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

import mnistkit
from mnistkit.cli import main
from mnistkit.errors import MnistkitError
from mnistkit.infer import default_model
from mnistkit.infer.default_model import default_run_dir, ensure_default_model
from mnistkit.training import runner as training


@pytest.fixture
def trainings(monkeypatch, tiny_registered):
    """The default model made of the "tiny" set; counts the trainings."""
    monkeypatch.setattr(default_model, "DATASET", "tiny")
    calls: list[object] = []
    real = training.train

    def counted(*args, **kwargs):
        calls.append(kwargs["out"])
        kwargs["device"] = "cpu"
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train", counted)
    return calls


def test_trained_once_then_reused(trainings, tiny_registered, tmp_path):
    cache, lines = tmp_path / "cache", []
    path = ensure_default_model(cache_dir=cache, data_dir=tiny_registered, log=lines.append)
    assert path == default_run_dir(cache) == cache / "models" / "tiny-fast"
    assert (path / "metrics.json").is_file() and (path / "model.safetensors").is_file()
    assert json.loads((path / "metrics.json").read_text())["recipe"] == "fast"
    assert len(trainings) == 1 and "training the 'fast' recipe once" in lines[0]
    weights = (path / "model.safetensors").read_bytes()
    again: list[str] = []
    assert ensure_default_model(cache_dir=cache, data_dir=tiny_registered, log=again.append) == path
    assert len(trainings) == 1 and again == []
    assert (path / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny-fast", "tiny-fast.lock"]


def test_two_first_uses_at_once_train_once(trainings, tiny_registered, tmp_path):
    cache, got, errors = tmp_path / "cache", [], []

    def use() -> None:
        try:
            got.append(ensure_default_model(cache_dir=cache, data_dir=tiny_registered, log=None))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=use) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and got == [default_run_dir(cache)] * 2
    assert len(trainings) == 1


def test_a_failed_training_leaves_nothing_half_written(monkeypatch, trainings, tiny_registered,
                                                       tmp_path):  # fmt: skip
    def broken(*args, out, **kwargs):
        (out / "config.json").write_text("{}")  # a run that got as far as its first file
        raise MnistkitError("no data")

    monkeypatch.setattr(training, "train", broken)
    cache = tmp_path / "cache"
    with pytest.raises(MnistkitError, match="no data"):
        ensure_default_model(cache_dir=cache, data_dir=tiny_registered, log=None)
    assert [p.name for p in (cache / "models").iterdir()] == ["tiny-fast.lock"]


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def test_load_without_a_path_uses_the_default_model(trainings, tiny_registered, tmp_path,
                                                    tiny_arrays):  # fmt: skip
    clf = mnistkit.load(cache_dir=tmp_path / "cache", data_dir=tiny_registered, quiet=True)
    assert clf.info["run_dir"] == str(default_run_dir(tmp_path / "cache"))
    assert clf.info["recipe"] == "fast" and len(trainings) == 1
    (_, _), (x, _) = tiny_arrays
    assert len(clf.predict(x[:3])) == 3


def test_cli_predict_image_without_a_run_directory(trainings, tiny_registered, tmp_path,
                                                   tiny_arrays, capsys):  # fmt: skip
    (_, _), (x, y) = tiny_arrays
    image = tmp_path / "digit.png"
    image.write_bytes(png(255 - x[0]))  # dark ink on white paper, as a person writes
    opts = ["--cache-dir", str(tmp_path / "cache"), "--data-dir", str(tiny_registered)]
    # A mistyped name: the error, and no model trained for it.
    assert main(["predict", str(tmp_path / "nope.png"), *opts]) == 2
    assert trainings == [] and "does not exist" in capsys.readouterr().out
    assert main(["predict", str(image), "--json", *opts]) == 0
    out = capsys.readouterr()
    assert "training the 'fast' recipe once" in out.err and "default model ready" in out.err
    [row] = json.loads(out.out)
    assert row["file"] == str(image) and set(row["number"]) <= set("0123456789")
    assert len(row["digits"]) == len(row["number"])
    assert main(["predict", str(image), "--json", *opts]) == 0  # again: from the cache
    out = capsys.readouterr()
    assert len(trainings) == 1 and out.err == "" and json.loads(out.out) == [row]
    # A run directory first is still a run directory; alone it asks for images.
    run = str(default_run_dir(tmp_path / "cache"))
    assert main(["predict", run, str(image), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [row]
    assert main(["predict", run]) == 2
    assert "give the images" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "runs" / "fsat"), str(image)]) == 2  # a typo
    assert "neither a run directory nor an image" in capsys.readouterr().err


def test_cli_serve_without_a_run_directory(monkeypatch, trainings, tiny_registered, tmp_path,
                                           capsys):  # fmt: skip
    pytest.importorskip("fastapi")
    from mnistkit.serve import server

    served = []

    def run(app, sock, **kw):  # the app that would be served, without serving it
        served.append(app)
        sock.close()

    monkeypatch.setattr(server, "run", run)
    opts = ["--cache-dir", str(tmp_path / "cache"), "--data-dir", str(tiny_registered)]
    assert main(["serve", "--port", "0", "--workers", "1", *opts]) == 0  # in this process
    served[0].state.batcher.close()
    assert len(trainings) == 1
    assert f"serving {default_run_dir(tmp_path / 'cache')} (fast" in capsys.readouterr().err


def test_the_onnx_backend_exports_the_default_model_once(trainings, tiny_registered, tmp_path,
                                                         tiny_arrays):  # fmt: skip
    pytest.importorskip("onnxruntime")
    opts = {"cache_dir": tmp_path / "cache", "data_dir": tiny_registered, "quiet": True}
    onnx = mnistkit.load(backend="onnx", **opts)
    path = default_run_dir(tmp_path / "cache") / "model.onnx"
    assert path.is_file() and len(trainings) == 1
    (_, _), (x, _) = tiny_arrays
    np.testing.assert_allclose(onnx.predict_arrays(x), mnistkit.load(**opts).predict_arrays(x),
                               atol=1e-5)  # fmt: skip
    stamp = path.stat().st_mtime_ns
    mnistkit.load(backend="onnx", **opts)
    assert path.stat().st_mtime_ns == stamp and len(trainings) == 1
