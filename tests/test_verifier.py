"""The segmentation verifier: its numpy forward against the torch net it was trained as, its
training data (clean numbers, candidates labelled by the ink they hold), the file in the run,
the reader without one (as before), and one claim on real MNIST digits."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mnistkit.infer import segment as sg
from mnistkit.infer.inkmap import ink_map
from mnistkit.infer.predict import Classifier
from mnistkit.infer.read import read_digits
from mnistkit.infer.verifier import VERIFIER_FILE, WIDTHS, Verifier, load_verifier
from mnistkit.verifier_train import (
    VerifierNet,
    clean_number,
    fit_verifier,
    labels_of,
    save_verifier,
    uniform,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def bar(width: int) -> np.ndarray:
    """A 28x28 'digit': a filled box ``width`` px wide, 20 high, ink high."""
    d = np.zeros((28, 28), np.uint8)
    d[4:24, 14 - width // 2 : 14 + (width + 1) // 2] = 255
    return d


@pytest.mark.parametrize("widths", [WIDTHS, (8, 16, 32)])  # today's, and older runs'
def test_numpy_forward_matches_torch(widths):
    torch.manual_seed(0)
    net = VerifierNet(widths).eval()
    ver = Verifier({k: v.detach().numpy() for k, v in net.state_dict().items()})
    x = np.random.default_rng(0).random((37, 28, 28), dtype=np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)[:, None]).numpy()
    np.testing.assert_allclose(ver(x), ref, rtol=1e-4, atol=1e-5)


def test_wrong_weights_are_refused():
    with pytest.raises(ValueError, match="conv1.weight"):
        Verifier({"conv2.weight": np.zeros((16, 8, 3, 3), np.float32)})
    with pytest.raises(ValueError, match="conv1.bias"):
        Verifier({"conv1.weight": np.zeros((3, 1, 5, 5), np.float32)})
    with pytest.raises(ValueError, match="conv1.weight"):
        Verifier({"conv1.weight": np.float32(1.0)})  # a scalar where a tensor belongs
    weights = {k: v.detach().numpy() for k, v in VerifierNet((8, 16, 32)).state_dict().items()}
    weights["conv2.weight"] = np.zeros((16, 4, 3, 3), np.float32)  # widths that do not chain
    with pytest.raises(ValueError, match="conv2.weight"):
        Verifier(weights)


def test_clean_number_labels_each_digit_whole_and_pairs_garbage():
    """Three bars written apart: each digit owns its ink; the lattice's candidate of one bar
    is whole, a candidate of two is garbage."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        page, owner = clean_number([bar(6), bar(10), bar(6)], rng)
        assert page.dtype == np.uint8 and page.shape[:2] == owner.shape
        assert set(np.unique(owner).tolist()) == {0, 1, 2, 3}
        m = ink_map(page)
        assert m is not None
        lat = sg.lattice(m, uniform, sg.Costs())
        assert lat is not None
        labels = labels_of(lat, owner)  # clean pages are read at their own scale
        for (i, j), label in labels.items():
            pieces = {q.piece for q in lat.prims[i:j]}
            if len(lat.prims) == 3 and j - i == 1:
                assert label == 1
            if len(pieces) >= 2 and len(lat.prims) == 3:
                assert label == 0


def test_trained_verifier_is_saved_and_loaded(tmp_path):
    rng = np.random.default_rng(0)
    x = np.stack([bar(int(w)) for w in rng.integers(4, 24, 256)])
    y = (np.array([int(im.any(0).sum()) for im in x]) < 14).astype(np.int8)  # narrow: whole
    weights = fit_verifier(x, y, epochs=3)
    assert load_verifier(tmp_path) is None  # a run from before the verifier
    save_verifier(tmp_path, weights, {"numbers": "0"})
    ver = load_verifier(tmp_path)
    assert ver is not None and (tmp_path / VERIFIER_FILE).is_file()
    np.testing.assert_array_equal(ver(x / 255.0), Verifier(weights)(x / 255.0))
    z = ver(x / 255.0)
    assert np.mean((z > 0) == (y == 1)) >= 0.9  # it learnt the toy rule


@pytest.mark.parametrize("content", [b"", b"not safetensors", "weights"])
def test_a_broken_verifier_file_is_one_clear_error(tmp_path, content):
    """Cut short, not safetensors, or another net's weights: one sentence naming the file."""
    from mnistkit.errors import MnistkitError

    path = tmp_path / VERIFIER_FILE
    if content == "weights":
        save_verifier(tmp_path, {"conv1.weight": np.zeros((8, 1, 3, 3), np.float32)}, {})
    else:
        path.write_bytes(content)
    with pytest.raises(MnistkitError, match="is not a segmentation verifier"):
        load_verifier(tmp_path)


def test_reading_without_a_verifier_is_as_before():
    """No verifier: the costs are those of before (``verify`` 0); a verifier that has no
    opinion (log-odds 0) reads as none does."""
    from test_read import one, page, shape_reader, zero

    assert sg.Costs().verify == 0.0 and sg.VERIFIED.verify > 0
    img = page(700)
    one(img, 60)
    zero(img, 120)
    zero(img, 210, top=60, h=90)
    one(img, 330)
    none = read_digits(img, shape_reader)
    blank = read_digits(img, shape_reader, verifier=lambda x: np.zeros(len(x)))
    assert len(none.items) == len(blank.items) == 4
    np.testing.assert_array_equal(none.probs, blank.probs)


@pytest.mark.parametrize("wanted", [True, False])
def test_train_writes_the_verifier_for_digits(tmp_path, monkeypatch, wanted):
    """A run on MNIST (here the synthetic set under MNIST's name) carries a verifier, unless
    ``verifier=False`` (runs only timed); the run reads numbers with it."""
    from conftest import make_arrays, tiny_dataset, write_idx_dir

    from mnistkit import data, verifier_train
    from mnistkit.training.runner import train

    raw = write_idx_dir(tmp_path / "idx", make_arrays())
    monkeypatch.setitem(data.DATASETS, "mnist", tiny_dataset(raw, name="mnist"))
    monkeypatch.setattr(verifier_train, "NUMBERS", 20)
    monkeypatch.setattr(verifier_train, "EPOCHS", 1)
    run = train("seed-dense512", out=tmp_path / "run", epochs=1, data_dir=tmp_path / "idx",
                cache_dir=tmp_path / "cache", device="cpu", quiet=True, verifier=wanted)  # fmt: skip
    assert (run.path / VERIFIER_FILE).is_file() == wanted
    assert (Classifier.load(run.path).verifier is not None) == wanted


@pytest.mark.mnist
def test_the_verifier_reads_touching_mnist_digits_as_two(mnist, tmp_path_factory):
    """Pairs of MNIST test digits touching (boxes overlapping by 6 % of their height), read by
    a real model (seed-convnet, one epoch) whose run carries the verifier ``train`` made: more
    are read as two digits with it than without (this model: 34 and 27 of 40; `fast`: 34 and
    26)."""
    from serve_support import trained_run
    from test_read import mnist_pair

    _, (x, _) = mnist
    clf = Classifier.load(trained_run(tmp_path_factory))
    assert clf.verifier is not None and clf.info["verifier"]
    rng = np.random.default_rng(0)
    pairs = [tuple(int(i) for i in rng.integers(0, len(x), 2)) for _ in range(40)]
    pages = [mnist_pair(x, a, b, -0.06) for a, b in pairs]
    with_it = sum(len(clf.read(p).number) == 2 for p in pages)
    clf.verifier = None
    without = sum(len(clf.read(p).number) == 2 for p in pages)
    assert with_it >= 32 and with_it >= without + 4, (with_it, without)


@pytest.mark.mnist
def test_a_pair_shaped_like_one_digit_is_not_read_alone(mnist, tmp_path_factory):
    """Two touching digits can look like one wide digit (an "89" read as a 0): the shortcut
    that reads a page as one digit without segmenting it took them as one. It now also asks
    the verifier (numbers of held-out training digits: 937 -> 942 of 1,000 exact, the
    single-digit photos unchanged). Pairs of MNIST test digits overlapping by 6 % of their
    height, read by a real model (seed-convnet, one epoch): 129 of 150 as two digits with the
    check, 118 without; single digits stay single."""
    from serve_support import trained_run
    from test_read import mnist_pair

    from mnistkit.infer.read import OneDigit, read_digits

    _, (x, _) = mnist
    clf = Classifier.load(trained_run(tmp_path_factory))
    rng = np.random.default_rng(1)
    pairs = [tuple(int(i) for i in rng.integers(0, len(x), 2)) for _ in range(150)]

    def count(pages: list[np.ndarray], priors: OneDigit, n: int) -> int:
        read = [read_digits(p, clf.predict_arrays, priors=priors, verifier=clf.verifier)
                for p in pages]  # fmt: skip
        return sum(len(r.items) == n for r in read)

    pages = [mnist_pair(x, a, b, -0.06) for a, b in pairs]
    gated, trusting = count(pages, OneDigit(), 2), count(pages, OneDigit(whole=-np.inf), 2)
    assert gated >= trusting + 6, (gated, trusting)
    singles = [(235 - 215 * cv2.resize(x[i], (100, 100)).astype(np.float32) / 255).astype(np.uint8)
               for i in range(100)]  # fmt: skip
    singles = [np.pad(p, 40, constant_values=235) for p in singles]
    assert count(singles, OneDigit(), 1) >= count(singles, OneDigit(whole=-np.inf), 1) - 1
