"""Reports: metrics against brute-force references, every file written, report.html against
metrics.json, ``mnistkit compare``, and the confusion matrix of a real MNIST run.

The metric functions are checked against plain Python loops written from the definitions
(scikit-learn is not a dependency). Report tests use a synthetic run directory (fast); the
real-MNIST test reuses the session's one-epoch ``seed-convnet`` run of the service tests.
"""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from mnistkit.cli import main  # noqa: E402
from mnistkit.metrics import calibration, class_scores, confusion_matrix  # noqa: E402
from mnistkit.report import REPORT_FILES, compare_rows, write_report  # noqa: E402
from mnistkit.rundir import count_parameters  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"]  # fmt: skip


# --- metrics against references --------------------------------------------------------------


def random_predictions(n: int = 500, k: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * 2
    logits[np.arange(n), labels] += 2.5  # mostly right, like a model
    p = np.exp(logits)
    return labels, p / p.sum(axis=1, keepdims=True)


def test_confusion_matrix_matches_a_loop():
    labels, p = random_predictions()
    pred = p.argmax(axis=1)
    ref = np.zeros((10, 10), dtype=np.int64)
    for t, q in zip(labels, pred, strict=True):
        ref[t, q] += 1
    cm = confusion_matrix(labels, pred)
    np.testing.assert_array_equal(cm, ref)
    assert cm.sum() == len(labels) and np.trace(cm) == (pred == labels).sum()


def test_confusion_matrix_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match="0..9"):
        confusion_matrix(np.array([0, 10]), np.array([0, 1]))


def test_class_scores_match_their_definitions():
    labels, p = random_predictions(n=300, seed=1)
    pred = p.argmax(axis=1)
    pred[pred == 3] = 4  # class 3 is never predicted: precision 0, not NaN
    scores = class_scores(confusion_matrix(labels, pred))
    for k in range(10):
        tp = sum(1 for t, q in zip(labels, pred, strict=True) if t == k and q == k)
        n_pred = sum(1 for q in pred if q == k)
        n_true = sum(1 for t in labels if t == k)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert scores.precision[k] == pytest.approx(precision)
        assert scores.recall[k] == pytest.approx(recall)
        assert scores.f1[k] == pytest.approx(f1)
        assert scores.support[k] == n_true
    assert scores.precision[3] == 0.0 and scores.f1[3] == 0.0


def test_calibration_matches_a_loop():
    labels, p = random_predictions(n=700, seed=2)
    p[0] = np.eye(10)[labels[0]]  # confidence exactly 1.0: the last bin
    p[1] = np.full(10, 0.1)  # confidence 0.1 ...
    p[1, 0] = 0.2  # ... made exactly 0.2, a bin edge: (0.1333, 0.2] is bin 2
    p[1] /= p[1].sum()
    n_bins = 15
    cal = calibration(p, labels, n_bins=n_bins)
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    ece = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(len(labels)) if (lo < conf[i] <= hi) or (b == 0 and conf[i] == 0)]  # fmt: skip
        assert cal.counts[b] == len(members)
        if members:
            acc = np.mean([pred[i] == labels[i] for i in members])
            mean_conf = np.mean([conf[i] for i in members])
            assert cal.accuracy[b] == pytest.approx(acc)
            assert cal.confidence[b] == pytest.approx(mean_conf)
            ece += len(members) / len(labels) * abs(acc - mean_conf)
        else:
            assert np.isnan(cal.accuracy[b])
    assert cal.ece == pytest.approx(ece)
    assert cal.counts.sum() == len(labels)


def test_calibration_of_a_calibrated_model_is_near_zero():
    # Labels drawn from the model's own probabilities: calibrated by construction.
    rng = np.random.default_rng(3)
    _, p = random_predictions(n=20000, seed=3)
    labels = np.array([rng.choice(10, p=row) for row in p])
    assert calibration(p, labels).ece < 0.02


# --- a synthetic run directory ----------------------------------------------------------------


def fake_run(folder: Path, *, recipe: str, test_accuracy: float, val: bool, params: dict | None = None) -> Path:  # fmt: skip
    """A run directory as mnistkit.train writes it, without training anything."""
    folder.mkdir(parents=True)
    metrics = {
        "recipe": recipe, "dataset": "mnist", "epochs": 3, "seed": 0, "device": "cpu",
        "threads": 2, "test_accuracy": test_accuracy, "test_loss": 0.0734512,
        "train_accuracy": 0.991234, "train_loss": 0.031, "val_accuracy": 0.9812 if val else None,
        "train_seconds": 12.345, "total_seconds": 15.5, "examples_per_second": 14579.3,
    }  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))
    config = {"recipe": {"name": recipe, "lr": 0.001}, "model": "dense512", "seed": 0,
              "dataset": "mnist", "data_sha256": {"t10k-labels-idx1-ubyte": "ff7b" * 16}}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    with open(folder / "history.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HISTORY_COLUMNS)
        for e, (tl, ta, vl, va) in enumerate([(0.3, 0.91, 0.12, 0.96), (0.1, 0.97, 0.09, 0.975), (0.05, 0.985, 0.095, 0.978)], 1):  # fmt: skip
            w.writerow([e, tl, ta, vl if val else "", va if val else "", 0.001, 4.1])
    if params is not None:
        from safetensors.numpy import save_file

        save_file(params, str(folder / "model.safetensors"))
    return folder


class Cells(HTMLParser):
    """Collects every element's data-metric/data-value pair and the text inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.imgs: list[str] = []
        self.tags: set[str] = set()
        self.per_class_rows: list[list[str]] = []
        self._row: list[str] | None = None
        self._in_td = False
        self._metric: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        if "data-metric" in a and "data-value" in a:
            self.values[a["data-metric"]] = a["data-value"]
        if "data-metric" in a and tag == "tr":
            self._metric = a["data-metric"]
        if tag == "td" and self._metric and "data-value" in a:
            self.values[self._metric] = a["data-value"]
        if tag == "tr" and "data-class" in a:
            self._row = []
        if tag == "td" and self._row is not None:
            self._in_td = True
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_td = False
        if tag == "tr":
            if self._row is not None:
                self.per_class_rows.append(self._row)
            self._row, self._metric = None, None

    def handle_data(self, data):
        if self._in_td and self._row is not None:
            self._row[-1] += data


def parse_report(path: Path) -> Cells:
    cells = Cells()
    cells.feed(path.read_text())
    return cells


@pytest.fixture
def synthetic(tmp_path, tiny_arrays):
    """A fake run plus test images, labels and probabilities of a mostly-right model."""
    (_, _), (x, y) = tiny_arrays
    logits = np.eye(10)[y] * 2.5 + np.random.default_rng(5).normal(size=(len(y), 10))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    acc = float((p.argmax(axis=1) == y).mean())
    run = fake_run(tmp_path / "run", recipe="seed-dense512", test_accuracy=acc, val=True)
    return run, x, y, p


def test_write_report_writes_every_file(synthetic):
    run, x, y, p = synthetic
    paths = write_report(run, x_test=x, y_test=y, probabilities=p)
    assert sorted(p.name for p in paths.values()) == sorted(REPORT_FILES)
    for path in paths.values():
        assert path.parent == run and path.stat().st_size > 1000, path
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC
    assert not list(run.glob(".*.tmp")), "a temp file was left behind"


def test_report_html_is_self_contained_and_matches_metrics_json(synthetic, tmp_path):
    run, x, y, p = synthetic
    out = tmp_path / "elsewhere"
    paths = write_report(run, x_test=x, y_test=y, probabilities=p, out_dir=out)
    assert paths["html"] == out / "report.html" and not (run / "report.html").exists()
    html_text = paths["html"].read_text()
    page = parse_report(paths["html"])
    # Self-contained: four embedded PNGs, nothing fetched, no scripts.
    assert len(page.imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in page.imgs)
    assert "script" not in page.tags and "link" not in page.tags
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html_text)
    # Every number of metrics.json is on the page, exactly, and as people read it.
    metrics = json.loads((run / "metrics.json").read_text())
    for key, value in metrics.items():
        assert json.loads(page.values[key]) == value, key
    acc = metrics["test_accuracy"]
    assert f"{100 * acc:.2f} %" in html_text and "0.0735" in html_text  # test loss, 4 places
    # The per-class table adds up to the test set and its errors.
    rows = page.per_class_rows
    assert [r[0] for r in rows] == [str(k) for k in range(10)]
    assert sum(int(r[4].replace(",", "")) for r in rows) == len(y)
    wrong = int((p.argmax(axis=1) != y).sum())
    assert sum(int(r[5].replace(",", "")) for r in rows) == wrong == int(page.values["errors"])
    assert wrong == round((1 - acc) * len(y))
    assert "seed-dense512" in html_text and "dense512" in html_text  # the config is there


def test_report_of_a_run_without_validation(synthetic):
    run, x, y, p = synthetic
    metrics = json.loads((run / "metrics.json").read_text())
    fake_run(run.parent / "noval", recipe="seed-convnet", test_accuracy=metrics["test_accuracy"],
             val=False)  # fmt: skip
    paths = write_report(run.parent / "noval", x_test=x, y_test=y, probabilities=p)
    assert all(path.exists() for path in paths.values())
    assert json.loads(parse_report(paths["html"]).values["val_accuracy"]) is None


def test_write_report_refuses_mismatched_inputs(synthetic):
    from mnistkit.errors import MnistkitError

    run, x, y, p = synthetic
    with pytest.raises(MnistkitError, match="do not match"):
        write_report(run, x_test=x, y_test=y, probabilities=p[:-1])
    with pytest.raises(MnistkitError, match="not a run directory"):
        write_report(run.parent / "nothing", x_test=x, y_test=y, probabilities=p)


# --- mnistkit compare ---------------------------------------------------------------------------


def test_count_parameters_reads_the_safetensors_header(tmp_path):
    weights = {"0.weight": np.zeros((512, 784), np.float32), "0.bias": np.zeros(512, np.float32),
               "1.running_mean": np.zeros(512, np.float32),
               "1.num_batches_tracked": np.zeros((), np.int64)}  # fmt: skip
    run = fake_run(tmp_path / "r", recipe="x", test_accuracy=0.9, val=False, params=weights)
    assert count_parameters(run) == 512 * 784 + 512  # BatchNorm statistics are not parameters
    assert count_parameters(tmp_path / "none") is None


def test_compare_prints_a_table_and_writes_a_plot(tmp_path, capsys):
    w = {"w": np.zeros((10, 784), np.float32), "b": np.zeros(10, np.float32)}
    a = fake_run(tmp_path / "a", recipe="seed-dense512", test_accuracy=0.9783, val=False, params=w)
    b = fake_run(tmp_path / "b", recipe="seed-convnet", test_accuracy=0.9891, val=True)
    png = tmp_path / "compare.png"
    assert main(["compare", str(a), str(b), "--out", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["run", "recipe", "test", "acc", "test", "loss", "train", "acc",
                              "epochs", "seconds", "parameters"]  # fmt: skip
    assert out[1].split() == [str(a), "seed-dense512", "97.83", "%", "0.0735", "99.12", "%", "3", "12.3", "7,850"]  # fmt: skip
    assert out[2].split()[:4] == [str(b), "seed-convnet", "98.91", "%"] and out[2].endswith("-")
    assert png.read_bytes()[:8] == PNG_MAGIC

    assert main(["compare", str(a), str(b), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in rows] == [r["run"] for r in compare_rows([a, b])] == [str(a), str(b)]
    assert [r["test_accuracy"] for r in rows] == [0.9783, 0.9891]
    assert [r["parameters"] for r in rows] == [7850, None]


def test_compare_of_a_folder_that_is_no_run_is_exit_2(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run directory" in err[0]


# --- a real MNIST run -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """A one-epoch seed-convnet run on real MNIST, shared with the service tests when it can."""
    import mnistkit

    if hasattr(mnistkit, "train"):
        from serve_support import trained_run

        return trained_run(tmp_path_factory)
    from mnistkit.training.runner import train

    run = tmp_path_factory.mktemp("report") / "seed-convnet-1epoch"
    train("seed-convnet", out=run, epochs=1, quiet=True, device="cpu")
    return run


@pytest.mark.mnist
@pytest.mark.slow
def test_report_of_a_real_run(real_run, tmp_path, mnist):
    from mnistkit.report import predict_probabilities

    (_, _), (x_test, y_test) = mnist
    metrics = json.loads((real_run / "metrics.json").read_text())
    out = tmp_path / "report"
    # No probabilities given: write_report loads the model and the test split itself.
    paths = write_report(real_run, out_dir=out)
    assert sorted(p.name for p in paths.values()) == sorted(REPORT_FILES)

    cm = confusion_matrix(y_test, predict_probabilities(real_run, x_test).argmax(axis=1))
    correct = round(metrics["test_accuracy"] * 10_000)
    assert cm.sum() == 10_000
    assert np.trace(cm) == correct
    page = parse_report(paths["html"])
    assert sum(int(r[4].replace(",", "")) for r in page.per_class_rows) == 10_000
    assert int(page.values["errors"]) == 10_000 - correct
    for key, value in metrics.items():
        assert json.loads(page.values[key]) == value, key
