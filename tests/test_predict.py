"""Classifier (torch and onnx agree), `mnistkit predict`, and the onnx path without torch.

The model is the session's one real run (``serve_support.trained_run``: seed-convnet, one
epoch on real MNIST), copied so that exporting into it touches nothing other tests use.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import digit_photos as handwriting
import numpy as np
import pytest
from PIL import Image
from serve_support import trained_run

from mnistkit.cli import main
from mnistkit.errors import ImageError, MnistkitError
from mnistkit.infer.export import to_onnx
from mnistkit.infer.predict import Classifier

pytestmark = pytest.mark.mnist


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A copy of the session's run with ``model.onnx`` exported into it."""
    src = trained_run(tmp_path_factory)
    dst = tmp_path_factory.mktemp("predict") / "run"
    dst.mkdir()
    for name in ("config.json", "metrics.json", "model.safetensors"):
        shutil.copy(src / name, dst / name)
    to_onnx(dst, n_check=200)
    return dst


@pytest.fixture(scope="module")
def samples(mnist):
    (_, _), (x, y) = mnist
    return handwriting.make_set(x, y, 60, seed=1, start=5000)


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def test_torch_and_onnx_agree_on_real_test_images(run, mnist):
    (_, _), (x, y) = mnist
    p_torch = Classifier.load(run).predict_arrays(x[:2000])
    p_onnx = Classifier.load(run, backend="onnx").predict_arrays(x[:2000])
    assert p_torch.shape == (2000, 10)
    assert (p_torch.argmax(1) == p_onnx.argmax(1)).all()
    assert np.abs(p_torch - p_onnx).max() < 1e-4
    assert np.allclose(p_torch.sum(1), 1, atol=1e-5)
    assert (p_torch.argmax(1) == y[:2000]).mean() > 0.95


def test_realistic_images_are_recognized_and_backends_agree(run, samples):
    images = [s.data for s in samples]
    labels = np.array([s.label for s in samples])
    torch_preds = Classifier.load(run).predict_batch(images)
    onnx_preds = Classifier.load(run, backend="onnx").predict_batch(images)
    got = np.array([p.label for p in torch_preds])
    assert [p.label for p in onnx_preds] == got.tolist()
    # A one-epoch model gets ~98.5 % of MNIST; photos of the same digits should stay close.
    assert (got == labels).mean() >= 0.9
    naive = Classifier.load(run).predict_arrays(np.stack([handwriting.naive28(d) for d in images]))
    assert (naive.argmax(1) == labels).mean() < 0.5  # why preprocessing matters


def test_prediction_fields_and_single_predict(run, samples):
    clf = Classifier.load(run)
    pred = clf.predict(samples[0].data)
    assert pred.label == pred.top[0][0] and len(pred.top) == 10
    assert abs(sum(pred.probabilities) - 1) < 1e-4
    assert pred.input28.shape == (28, 28) and pred.input28.dtype == np.float32
    d = pred.to_dict(top_k=2)
    assert set(d) == {"number", "digits", "label", "probabilities", "top", "not_digit"}
    assert len(d["top"]) == 2 and d["number"] == str(pred.label) and len(d["digits"]) == 1
    assert d["digits"][0]["label"] == pred.label and len(d["digits"][0]["bbox"]) == 4
    assert clf.info["recipe"] == "seed-convnet" and 0.9 < clf.info["test_accuracy"] <= 1


def test_blank_page_is_flagged_not_a_digit(run):
    pred = Classifier.load(run).predict(png(np.full((200, 300), 240, np.uint8)))
    assert pred.not_digit is not None and "blank" in pred.not_digit


def test_predict_batch_raises_for_a_bad_image(run, samples):
    with pytest.raises(ImageError):
        Classifier.load(run).predict_batch([samples[0].data, b"not an image"])


def test_load_errors_are_one_sentence(run, tmp_path):
    with pytest.raises(MnistkitError, match="not a run directory"):
        Classifier.load(tmp_path / "nope")
    with pytest.raises(MnistkitError, match="backend"):
        Classifier.load(run, backend="tflite")
    empty = tmp_path / "run"
    empty.mkdir()
    with pytest.raises(MnistkitError, match="mnistkit export"):
        Classifier.load(empty, backend="onnx")


def test_stale_onnx_is_refused(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(MnistkitError, match="export"):
        Classifier.load(copy, backend="onnx")


def test_onnx_backend_never_imports_torch(run, samples, tmp_path):
    image = tmp_path / "d.jpg"
    image.write_bytes(samples[0].data)
    code = (
        "import sys, mnistkit\n"
        f"p = mnistkit.load({str(run)!r}, backend='onnx').predict({str(image)!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(p.label)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == samples[0].label or 0 <= int(out.stdout) <= 9
    cli = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mnistkit", "predict", str(run), str(image),
         "--backend", "onnx"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert not any(line.split("|")[-1].strip() == "torch" for line in cli.stderr.splitlines())


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path, samples):
    root = tmp_path / "digits"
    (root / "sub").mkdir(parents=True)
    jpeg = b"\xff\xd8"
    for s in samples[:3]:
        suffix = "jpg" if s.data.startswith(jpeg) else "png"
        (root / f"{s.index}.img.{suffix}").write_bytes(s.data)
    (root / "sub" / f"{samples[3].index}.png").write_bytes(samples[3].data)
    (root / "notes.txt").write_text("not an image, and skipped in folders")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (root / "empty.png").write_bytes(b"")
    return root


def test_cli_table_with_bad_files_exits_2(run, folder, capsys):
    rc = main(["predict", str(run), str(folder)])
    out = capsys.readouterr()
    assert rc == 2
    lines = out.out.strip().splitlines()
    assert lines[0].split()[:2] == ["number", "p"]
    body = lines[1:]
    assert len(body) == 6  # 4 images + broken + empty; notes.txt skipped
    assert sum("error" in line for line in body) == 2
    assert "Traceback" not in out.err


def test_cli_json_top_k_save_inputs(run, folder, samples, tmp_path, capsys):
    saved = tmp_path / "saved"
    rc = main(
        ["predict", str(run), str(folder), "--json", "--top-k", "2", "--save-inputs", str(saved)]
    )
    rows = json.loads(capsys.readouterr().out)
    assert rc == 2
    assert [r["file"] for r in rows] == sorted(r["file"] for r in rows)  # recursive, sorted
    good = [r for r in rows if "error" not in r]
    bad = [r for r in rows if "error" in r]
    assert len(good) == 4 and len(bad) == 2
    for r in good:
        assert len(r["top"]) == 2 and len(r["probabilities"]) == 10
        img = np.asarray(Image.open(r["input28"]))
        assert img.shape == (28, 28)
    by_index = {s.index: s.label for s in samples}
    right = [r["label"] == by_index[int(Path(r["file"]).name.split(".")[0])] for r in good]
    assert sum(right) >= 3


def test_cli_stdin_and_all_good_exit_0(run, samples, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(samples[1].data)))
    rc = main(["predict", str(run), "-", "--json", "--backend", "onnx"])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0 and rows[0]["file"] == "-" and 0 <= rows[0]["label"] <= 9


def test_cli_empty_folder_missing_file_and_bad_options(run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["predict", str(run), str(tmp_path / "empty"), str(tmp_path / "missing.png")])
    out = capsys.readouterr().out
    assert rc == 2 and "no images" in out and "does not exist" in out
    assert main(["predict", str(run), str(tmp_path), "--top-k", "0"]) == 2
    assert "--top-k" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "norun"), str(tmp_path)]) == 2


def test_cli_subprocess_has_no_traceback(run, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = subprocess.run(
        [sys.executable, "-m", "mnistkit", "predict", str(run), str(bad)],
        capture_output=True, text=True, timeout=120, env={**os.environ},
    )  # fmt: skip
    assert out.returncode == 2
    assert "Traceback" not in out.stderr + out.stdout
    assert "bad.jpg" in out.stdout


def test_cli_images_may_follow_options(run, folder, capsys):
    """`predict RUN --backend onnx IMAGE ...`, as the Makefile's demo writes it: the images after
    an option are still the command's images; an unknown option is still a usage error."""
    images = sorted(str(p) for p in Path(folder).iterdir() if p.suffix in (".png", ".jpg"))[:3]
    assert main(["predict", str(run), "--json", images[0], *images[1:]]) in (0, 2)
    rows = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in rows] == images
    with pytest.raises(SystemExit) as e:
        main(["predict", str(run), "--json", images[0], "--no-such-option"])
    assert e.value.code == 2
