"""Inference speed: images per second at a few batch sizes and single-image latency, and
the time preprocessing takes per image size.

Measured for torch eager (eval mode, ``torch.inference_mode``) and, when ``onnx`` and
``onnxruntime`` are installed, for ONNX Runtime on the CPU. Untrained weights run exactly as
fast as trained ones, so a model name is enough; a run directory measures that run's model.
Preprocessing is timed from the encoded bytes (decoding included) on one thread, on images
drawn here: a 4000x3000 JPEG photo, a 1000x1000 JPEG, the drawing page's 280x280 PNG (RGBA, as
the browser exports it), a 28x28 PNG.
"""

from __future__ import annotations

import functools
import io
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mnistkit.bench.train import machine_info
from mnistkit.infer.verifier import Verifier

Forward = Callable[[np.ndarray], Any]


def _time_batches(forward: Forward, batch: int, min_seconds: float, warmup: int = 3) -> float:
    """Images per second of ``forward`` on random batches of ``batch`` images."""
    x = np.random.default_rng(0).random((batch, 1, 28, 28), dtype=np.float32)
    for _ in range(warmup):
        forward(x)
    calls, t0 = 0, time.perf_counter()
    while True:
        forward(x)
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds and calls >= 3:
            return calls * batch / elapsed


def _latency(forward: Forward, calls: int) -> dict[str, float]:
    """p50 and p99 of single-image calls, in milliseconds."""
    x = np.random.default_rng(1).random((1, 1, 28, 28), dtype=np.float32)
    for _ in range(10):
        forward(x)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        forward(x)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def _torch_forward(model: torch.nn.Module, channels_last: bool) -> Forward:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.eval().to(memory_format=fmt)  # type: ignore[call-overload]

    def forward(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return model(torch.from_numpy(x).contiguous(memory_format=fmt))

    return forward


def _onnx_forward(model: torch.nn.Module) -> tuple[Forward | None, str]:
    """An ONNX Runtime forward, or None and the reason it is skipped."""
    try:
        import onnxruntime as ort

        from mnistkit.infer.export import onnx_bytes
    except ImportError as e:
        return None, f"skipped: {e.name or e} is not installed (pip install 'mnistkit[onnx]')"
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = torch.get_num_threads()  # the same cores torch gets
    sess = ort.InferenceSession(onnx_bytes(model), opts, providers=["CPUExecutionProvider"])
    return (lambda x: sess.run(None, {"image": x})[0]), f"onnxruntime {ort.__version__}"


@functools.lru_cache(maxsize=1)
def preprocess_images() -> dict[str, bytes]:
    """Encoded test images of a digit at the sizes people send: name -> bytes."""
    import cv2
    from PIL import Image

    def encode(a: np.ndarray, fmt: str) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        return buf.getvalue()

    def page(w: int, h: int, digit_h: int, colour: bool) -> np.ndarray:
        rng = np.random.default_rng(0)
        ink = np.zeros((h, w), np.uint8)
        scale = digit_h / 22  # Hershey glyphs are about 22 px high at scale 1
        cv2.putText(ink, "7", (w // 3, h // 2 + digit_h // 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    255, max(1, int(scale * 2)), cv2.LINE_AA)  # fmt: skip
        shade = np.linspace(235, 200, w, dtype=np.float32)[None, :]  # uneven light
        img = shade - ink * np.float32(180 / 255) + 3 * rng.standard_normal((h, w), np.float32)
        a = np.clip(img, 0, 255).astype(np.uint8)
        return np.stack([a, a, (a * 0.95).astype(np.uint8)], -1) if colour else a

    canvas = np.zeros((280, 280), np.uint8)
    cv2.putText(canvas, "7", (50, 250), cv2.FONT_HERSHEY_SIMPLEX, 9, 255, 20, cv2.LINE_AA)
    small = cv2.resize(canvas, (28, 28), interpolation=cv2.INTER_AREA)
    # As the drawing page's canvas.toBlob sends it: RGBA, opaque, white ink on black.
    rgba = np.dstack([canvas, canvas, canvas, np.full_like(canvas, 255)])
    return {
        "4000x3000 JPEG photo": encode(page(4000, 3000, 600, True), "JPEG"),
        "1000x1000 JPEG": encode(page(1000, 1000, 250, True), "JPEG"),
        "280x280 canvas PNG": encode(rgba, "PNG"),
        "28x28 PNG": encode(small, "PNG"),
    }


def bench_preprocess(runs: int = 20) -> dict[str, dict[str, float]]:
    """Median and 90th percentile ms of ``preprocess`` from encoded bytes (wall clock, and the
    median CPU time), one OpenCV thread and freed memory kept, as in ``mnistkit serve``
    (:mod:`mnistkit.heap`): this process keeps those settings."""
    import cv2

    from mnistkit.heap import keep_freed_memory
    from mnistkit.infer.preprocess import preprocess

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    keep_freed_memory()  # as `mnistkit serve` runs it
    out = {}
    try:
        for name, data in preprocess_images().items():
            preprocess(data)  # warm-up: first calls load code and allocate
            times, cpu = [], []
            for _ in range(runs):
                t0, c0 = time.perf_counter(), time.process_time()
                preprocess(data)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            ms = np.array(times) * 1000
            # CPU time too: on a shared, busy machine the wall clock also counts the waits for
            # a core; the process's own CPU time does not.
            out[name] = {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
                         "cpu_median_ms": float(np.median(cpu) * 1000), "bytes": len(data),
                         "runs": runs}  # fmt: skip
    finally:
        cv2.setNumThreads(threads)
    return out


def number_photo() -> bytes:
    """A 4000x3000 JPEG photo of a 6-digit number written 400 px high across the page."""
    import cv2
    from PIL import Image

    rng = np.random.default_rng(0)
    ink = np.zeros((3000, 4000), np.uint8)
    cv2.putText(ink, "407219", (700, 1700), cv2.FONT_HERSHEY_SIMPLEX, 400 / 22, 255, 36,
                cv2.LINE_AA)  # fmt: skip
    shade = np.linspace(235, 200, 4000, dtype=np.float32)[None, :]
    img = np.clip(shade - ink * np.float32(180 / 255) + 3 * rng.standard_normal((3000, 4000),
                  np.float32), 0, 255).astype(np.uint8)  # fmt: skip
    buf = io.BytesIO()
    Image.fromarray(np.stack([img, img, (img * 0.95).astype(np.uint8)], -1)).save(buf, "JPEG",
                                                                                 quality=90)  # fmt: skip
    return buf.getvalue()


def bench_read(
    model: torch.nn.Module, runs: int = 20, verifier: Verifier | None = None
) -> dict[str, float]:
    """Median ms (wall clock, and CPU time) to read the 6-digit number of :func:`number_photo`
    from its bytes: decoding, segmentation, every candidate digit through the model (torch,
    one batch) and the run's segmentation verifier if it has one, one OpenCV thread and one
    BLAS thread, as a serving worker of one thread reads it."""
    import cv2
    from threadpoolctl import threadpool_limits

    from mnistkit.infer.export import softmax
    from mnistkit.infer.read import read_digits

    data = number_photo()
    model = model.eval()

    def probabilities(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return softmax(model(torch.from_numpy(x[:, None].astype(np.float32))).numpy())

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            read_digits(data, probabilities, verifier=verifier)  # warm-up
            times, cpu = [], []
            for _ in range(runs):
                t0, c0 = time.perf_counter(), time.process_time()
                reading = read_digits(data, probabilities, verifier=verifier)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
    finally:
        cv2.setNumThreads(threads)
    return {"median_ms": float(np.median(times) * 1000), "cpu_median_ms":
            float(np.median(cpu) * 1000), "digits": len(reading.items), "runs": runs}  # fmt: skip


def bench_infer(
    model: torch.nn.Module,
    *,
    name: str,
    batch_sizes: tuple[int, ...] = (1, 64, 1024),
    min_seconds: float = 1.0,
    latency_calls: int = 300,
    channels_last: bool = True,
    backends: tuple[str, ...] = ("torch", "onnx"),
    preprocess_runs: int = 20,
    verifier: Verifier | None = None,
) -> dict[str, Any]:
    """Images/second per batch size and single-image latency, per backend.

    Args:
        model: any registered model (weights do not matter for speed).
        name: what to call it in the output.
        batch_sizes: batch sizes to time.
        min_seconds: how long each batch size runs (at least three calls).
        latency_calls: single-image calls behind p50/p99.
        channels_last: torch's memory format for convolutions (ONNX Runtime picks its own).
        backends: ``torch`` and/or ``onnx``.
        preprocess_runs: timed runs of preprocessing per image size (0: not measured).
        verifier: the run's segmentation verifier, for reading a number (None: without).

    Returns:
        ``{"model", "tta", "machine", "backends": {name: {"images_per_second":
        {batch: ips}, "latency": {"p50_ms", "p99_ms"}} or {"skipped": reason}},
        "preprocess": {image: {"median_ms", "p90_ms", "cpu_median_ms", "bytes", "runs"}}}``.
    """
    # A model with test-time augmentation runs its ``tta`` views inside one forward pass (the
    # ONNX graph too): an image is one image here, whatever the views it costs.
    out: dict[str, Any] = {"model": name, "tta": int(getattr(model, "tta", 1)),
                           "machine": machine_info("cpu"), "backends": {}}  # fmt: skip
    if preprocess_runs > 0:
        out["preprocess"] = bench_preprocess(preprocess_runs)
        out["read_number"] = bench_read(model, preprocess_runs, verifier)
    for backend in backends:
        if backend == "torch":
            forward: Forward | None = _torch_forward(model, channels_last)
            note = f"torch {torch.__version__} eager"
        else:
            forward, note = _onnx_forward(model)
        if forward is None:
            out["backends"][backend] = {"skipped": note}
            continue
        ips = {str(b): _time_batches(forward, b, min_seconds) for b in batch_sizes}
        out["backends"][backend] = {
            "runtime": note,
            "images_per_second": ips,
            "latency": _latency(forward, latency_calls),
        }
    return out


def format_infer(result: dict[str, Any]) -> str:
    from mnistkit.bench.train import format_machine

    tta = result.get("tta", 1)
    views = f"; {tta}-view TTA inside the model, counted once per image" if tta > 1 else ""
    lines = [f"bench infer: model {result['model']} (images/s are images{views})"]
    for backend, r in result["backends"].items():
        if "skipped" in r:
            lines.append(f"{backend:>6}: {r['skipped']}")
            continue
        rates = "  ".join(f"batch {b}: {v:,.0f} img/s" for b, v in r["images_per_second"].items())
        lat = r["latency"]
        lines.append(f"{backend:>6}: {rates}  |  1 image: p50 {lat['p50_ms']:.3f} ms, "
                     f"p99 {lat['p99_ms']:.3f} ms  ({r['runtime']})")  # fmt: skip
    for image, r in result.get("preprocess", {}).items():
        lines.append(f"preprocess {image:<20} median {r['median_ms']:7.2f} ms, p90 "
                     f"{r['p90_ms']:7.2f} ms, CPU time median {r['cpu_median_ms']:6.2f} ms  "
                     f"({r['runs']} runs, 1 thread, decoding included, memory kept "
                     "as `serve` keeps it)")  # fmt: skip
    if "read_number" in result:
        r = result["read_number"]
        lines.append(f"read a 6-digit number, 4000x3000 JPEG: median {r['median_ms']:.1f} ms, CPU "
                     f"time median {r['cpu_median_ms']:.1f} ms, {r['digits']} digits found "
                     f"({r['runs']} runs, torch, 1 OpenCV thread, decoding included)")  # fmt: skip
    lines.append("machine: " + format_machine(result["machine"]))
    return "\n".join(lines)


def load_for_bench(run_dir: str | os.PathLike[str] | None, model_name: str) -> torch.nn.Module:
    """The model of a run directory, or a freshly built registered model."""
    if run_dir is not None:
        from mnistkit.rundir import load_model

        return load_model(run_dir, device="cpu")[0]
    from mnistkit.models import create_model

    return create_model(model_name)
