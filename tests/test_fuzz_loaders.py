"""Every loader of files from disk, fuzzed: random truncations and bit flips of real files give
a clear error (a MnistkitError naming the file) or, where the damage cannot be told from a
valid file, a result that passes every check; never another exception and never a hang
(pytest-timeout guards the hang). ``test_idx.py`` and ``test_preprocess.py`` fuzz the IDX
parser and decoded pixel arrays; this module fuzzes the files themselves.
"""

from __future__ import annotations

import gzip
import io
import json
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mnistkit import rundir as runs
from mnistkit.data.idx import encode_idx, read_idx
from mnistkit.errors import DataError, ImageError, MnistkitError
from mnistkit.infer.preprocess import preprocess
from mnistkit.models import create_model
from mnistkit.runconfig import check_config
from mnistkit.training import resume
from mnistkit.training.optim import create_optimizer
from mnistkit.training.resume import Checkpointer, fingerprint
from mnistkit.training.runner import train
from mnistkit.training.speed import StepExtras

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
OUTCOMES: Counter[str] = Counter()  # what the fuzzing found, printed at the end (pytest -s)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished one-epoch run of seed-mlp-l1 on synthetic data (with a checkpoint)."""
    from conftest import make_arrays, tiny_dataset, write_idx_dir

    from mnistkit import data

    folder = tmp_path_factory.mktemp("tiny")
    raw = write_idx_dir(folder, make_arrays())
    before = data.DATASETS.get("tiny")
    data.DATASETS["tiny"] = tiny_dataset(raw)
    out = tmp_path_factory.mktemp("fuzz") / "run"
    train("seed-mlp-l1", out=out, epochs=1, dataset="tiny", data_dir=folder, device="cpu",
          quiet=True)  # fmt: skip
    yield out
    if before is None:
        data.DATASETS.pop("tiny")
    else:
        data.DATASETS["tiny"] = before
    print(f"\nfuzz outcomes: {dict(sorted(OUTCOMES.items()))}")


def damage(blob: bytes, cut: int | None, flip: tuple[int, int] | None) -> bytes:
    """Truncate to ``cut`` bytes, or flip bit ``flip[1]`` of byte ``flip[0] % len``."""
    if cut is not None:
        return blob[: cut % max(1, len(blob))]
    assert flip is not None
    out = bytearray(blob)
    out[flip[0] % len(out)] ^= 1 << flip[1]
    return bytes(out)


# Half the flips land in the first 400 bytes (headers: lengths, dtypes, shapes, metadata).
DAMAGE = st.one_of(
    st.tuples(st.integers(0, 10**7), st.none()),
    st.tuples(st.none(), st.tuples(st.integers(0, 399), st.integers(0, 7))),
    st.tuples(st.none(), st.tuples(st.integers(0, 10**7), st.integers(0, 7))),
)


@FUZZ
@given(DAMAGE)
def test_damaged_weights_are_always_refused(run_dir, tmp_path_factory, how):
    """model.safetensors carries a SHA-256 seal: every flip and every cut is caught."""
    good = (run_dir / runs.WEIGHTS).read_bytes()
    folder = tmp_path_factory.mktemp("w")
    (folder / runs.CONFIG).write_bytes((run_dir / runs.CONFIG).read_bytes())
    (folder / runs.WEIGHTS).write_bytes(damage(good, *how))
    with pytest.raises(MnistkitError, match="model.safetensors"):
        runs.load_model(folder)
    OUTCOMES["weights refused"] += 1


@FUZZ
@given(DAMAGE)
def test_damaged_checkpoints_are_always_refused(run_dir, tmp_path_factory, how):
    good = (run_dir / runs.CHECKPOINT).read_bytes()
    folder = tmp_path_factory.mktemp("c")
    (folder / runs.CHECKPOINT).write_bytes(damage(good, *how))
    model = create_model("mlp-l1")
    with pytest.raises(MnistkitError, match="checkpoint"):
        resume.load_checkpoint(folder, model, create_optimizer("rmsprop", model.parameters(), 1e-3))
    OUTCOMES["checkpoint refused"] += 1


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(DAMAGE)
def test_damaged_config_is_refused_or_caught_by_the_checkpoint(run_dir, tmp_path_factory, how):
    """config.json is text a person may edit, so a flip can yield another valid config (a
    seed of 0 becoming 1). Such a config passes the field checks but, where it changes the
    training, ``--resume`` refuses it: it differs from the checkpoint's sealed copy."""
    good = (run_dir / runs.CONFIG).read_bytes()
    folder = tmp_path_factory.mktemp("j")
    (folder / runs.CONFIG).write_bytes(damage(good, *how))
    try:
        config = runs.read_config(folder, resume=True)
    except MnistkitError as e:
        assert "config.json" in str(e)
        OUTCOMES["config refused by its checks"] += 1
        return
    if fingerprint(config) == fingerprint(json.loads(good)):
        OUTCOMES["config harmless change accepted"] += 1  # versions, data source, threads...
        return
    model = create_model("mlp-l1")
    opt = create_optimizer("rmsprop", model.parameters(), 1e-3)
    gen = torch.Generator()
    rec_extras = StepExtras(model, _Plain(), gen)
    ckpt = Checkpointer(run_dir, model, opt, gen, rec_extras, torch.device("cpu"), config)
    with pytest.raises(MnistkitError, match="differs from its checkpoint"):
        ckpt.restore(config, 200, 2)
    OUTCOMES["config refused by the checkpoint"] += 1


class _Plain:
    augment: dict = {}
    ema = 0.0


def test_config_field_rules():
    base = {"model": "dense512", "model_kwargs": {}}
    check_config(base, "c.json")
    for key, bad in [("epochs", 0), ("epochs", True), ("lr", -1.0), ("lr", float("nan")),
                     ("seed", "0"), ("val_split", 1.0), ("device", "tpu"),
                     ("data_sha256", {"a": 1}), ("model_kwargs", [])]:  # fmt: skip
        with pytest.raises(MnistkitError, match=key):
            check_config({**base, key: bad}, "c.json")
    with pytest.raises(MnistkitError, match="has no 'recipe' field"):
        check_config(base, "c.json", resume=True)


@FUZZ
@given(st.integers(0, 10**6), st.integers(0, 7), st.booleans())
def test_damaged_gzip_idx_gives_data_error(tmp_path_factory, cut, bit, truncate):
    """read_idx on a damaged .gz: a DataError, or (a flip gzip's CRC cannot see, in the header's
    optional fields) the very array."""
    images = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
    blob = gzip.compress(encode_idx(images), mtime=0)
    path = tmp_path_factory.mktemp("g") / "x-idx3-ubyte.gz"
    path.write_bytes(damage(blob, cut if truncate else None, None if truncate else (cut, bit)))
    try:
        arr = read_idx(path)
    except DataError as e:
        assert str(path) in str(e) or "IDX" in str(e)
        OUTCOMES["gzip idx refused"] += 1
        return
    # A flip gzip ignores (its header's time or OS bytes) or an IDX-level change the parser
    # accepts: never silently different pixels of the same shape.
    OUTCOMES["gzip idx readable"] += 1
    if arr.shape == images.shape:
        assert np.array_equal(arr, images)


def _digit_png(fmt: str) -> bytes:
    img = np.full((84, 84), 255, np.uint8)
    img[20:64, 38:46] = 0  # a "1" in ink on paper
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt)
    return buf.getvalue()


IMAGES = {fmt: _digit_png(fmt) for fmt in ("PNG", "JPEG", "BMP", "GIF", "WEBP")}


@FUZZ
@given(st.sampled_from(sorted(IMAGES)), DAMAGE)
def test_damaged_images_give_image_error_or_a_valid_digit(fmt, how):
    try:
        out = preprocess(damage(IMAGES[fmt], *how))
    except ImageError:
        OUTCOMES["image refused"] += 1
        return
    OUTCOMES["image decoded"] += 1  # a flip inside pixel data is a valid, different image
    x = out.image
    assert x.shape[-2:] == (28, 28) and np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
