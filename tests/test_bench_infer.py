"""`mnistkit bench infer`: the preprocessing section (image sizes, what is reported).

Never on time: these check which images are timed and what reaches the output.
"""

from __future__ import annotations

import io

from PIL import Image

from mnistkit.bench.infer import bench_infer, format_infer, preprocess_images
from mnistkit.infer.preprocess import preprocess
from mnistkit.models import create_model


def test_the_timed_images_are_the_sizes_named_and_hold_a_digit():
    images = preprocess_images()
    sizes = {name: Image.open(io.BytesIO(data)).size for name, data in images.items()}
    assert sizes == {
        "4000x3000 JPEG photo": (4000, 3000),
        "1000x1000 JPEG": (1000, 1000),
        "280x280 canvas PNG": (280, 280),
        "28x28 PNG": (28, 28),
    }
    for name, data in images.items():
        res = preprocess(data)
        assert not res.blank and res.image.max() > 0.5, name


def test_bench_infer_reports_preprocessing_per_image_size():
    result = bench_infer(create_model("fast-cnn"), name="fast-cnn", batch_sizes=(1,),
                         min_seconds=0.01, latency_calls=3, backends=("torch",),
                         preprocess_runs=2)  # fmt: skip
    pre = result["preprocess"]
    assert list(pre) == list(preprocess_images())
    for r in pre.values():
        assert r["runs"] == 2 and 0 < r["median_ms"] <= r["p90_ms"] and r["bytes"] > 0
        assert r["cpu_median_ms"] > 0
    text = format_infer(result)
    assert "preprocess 4000x3000 JPEG photo" in text and "1 thread, decoding included" in text
    assert "preprocess" not in bench_infer(
        create_model("fast-cnn"), name="x", batch_sizes=(1,), min_seconds=0.01,
        latency_calls=3, backends=("torch",), preprocess_runs=0,
    )  # fmt: skip


def test_a_model_with_tta_is_counted_once_per_image():
    result = bench_infer(create_model("fast-cnn", tta=5), name="fast", batch_sizes=(1, 4),
                         min_seconds=0.01, latency_calls=3, preprocess_runs=0)  # fmt: skip
    assert result["tta"] == 5
    assert "5-view TTA inside the model, counted once per image" in format_infer(result)
    plain = bench_infer(create_model("fast-cnn", tta=1), name="x", batch_sizes=(1,), min_seconds=0.01,
                        latency_calls=3, backends=("torch",), preprocess_runs=0)  # fmt: skip
    assert plain["tta"] == 1 and "TTA" not in format_infer(plain)


def test_bench_infer_times_reading_a_six_digit_number():
    result = bench_infer(create_model("fast-cnn"), name="fast-cnn", batch_sizes=(1,),
                         min_seconds=0.01, latency_calls=3, backends=("torch",),
                         preprocess_runs=1)  # fmt: skip
    r = result["read_number"]
    assert r["runs"] == 1 and r["median_ms"] > 0 and r["cpu_median_ms"] > 0
    assert "read a 6-digit number, 4000x3000 JPEG" in format_infer(result)
