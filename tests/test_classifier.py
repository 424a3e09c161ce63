"""The Python API as Keras users write it: ``clf.predict(x_test[:5])`` gives a list of
predictions, one array gives one, and a Prediction prints as one short line. On a run trained
on the synthetic "tiny" set."""

from __future__ import annotations

import numpy as np
import pytest

import mnistkit
from mnistkit.infer.predict import Classifier, Prediction
from mnistkit.training.runner import train


@pytest.fixture
def clf(tiny_registered, tmp_path) -> Classifier:
    train("seed-dense512", dataset="tiny", data_dir=tiny_registered, out=tmp_path / "run",
          epochs=2, quiet=True, device="cpu")  # fmt: skip
    return mnistkit.load(tmp_path / "run")


def same(a: Prediction, b: Prediction) -> bool:
    return a.label == b.label and np.allclose(a.probabilities, b.probabilities, atol=1e-6)


def test_a_batch_array_gives_a_list_like_keras_predict(clf, tiny_arrays):
    (_, _), (x, _) = tiny_arrays
    one_by_one = [clf.predict(x[i]) for i in range(5)]
    assert all(isinstance(p, Prediction) for p in one_by_one)
    for batch in (x[:5], x[:5] / 255.0, x[:5].astype(np.float32) / 255, x[:5, :, :, None],
                  x[:5, None]):  # fmt: skip
        preds = clf.predict(batch)
        assert isinstance(preds, list) and len(preds) == 5
        assert all(same(p, q) for p, q in zip(preds, one_by_one, strict=True))
    [single] = clf.predict(x[:1])  # a batch of one is still a batch, as in Keras
    assert same(single, one_by_one[0])
    assert clf.predict(x[:0]) == []
    assert [p.label for p in one_by_one] == list(clf.predict_arrays(x[:5]).argmax(1))


def test_a_prediction_prints_as_one_short_line(clf, tiny_arrays):
    (_, _), (x, _) = tiny_arrays
    pred = clf.predict(x[0])
    text = repr(pred)
    note = f", not_digit={pred.not_digit!r}" if pred.not_digit else ""
    assert text == f"Prediction(label={pred.label}, p={pred.top[0][1]:.3f}{note})"
    assert str(pred) == text and "\n" not in text
    blank = clf.predict(np.zeros((28, 28), np.uint8))
    assert repr(blank).endswith("not_digit='blank: no ink found')")
    assert "\n" not in repr(clf.predict(x[:3]))


def test_threads_hold_the_blas_libraries_too(tiny_registered, tmp_path):
    """``threads=1`` also holds every BLAS library loaded (OpenCV's bundled OpenBLAS, numpy's)
    to one thread: OpenCV's spun a second core while a number was read (170 ms of CPU for
    85 ms of wall time). In a process of its own: the limit is the whole process's."""
    import json
    import subprocess
    import sys

    train("seed-dense512", dataset="tiny", data_dir=tiny_registered, out=tmp_path / "run",
          epochs=1, quiet=True, device="cpu")  # fmt: skip
    probe = (
        "import json, sys, cv2, numpy, mnistkit; "
        "from threadpoolctl import threadpool_info, threadpool_limits; "
        "blas = lambda: [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas']; "
        "threadpool_limits(2, user_api='blas'); before = blas(); "
        "mnistkit.load(sys.argv[1], threads=1); print(json.dumps([before, blas()]))"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "run")], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    before, after = json.loads(out)
    assert len(before) >= 1 and before == [2] * len(before)  # cv2's OpenBLAS at least
    assert after == [1] * len(before)
