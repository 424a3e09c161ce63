"""``to_onnx``: a run's model as ``RUN_DIR/model.onnx``, checked against torch.

The graph takes ``image`` float32 (batch, 1, 28, 28) in [0, 1], ink high, and gives ``logits``
(batch, 10), already divided by the run's temperature (``calibration``), so that their softmax
is the calibrated probabilities wherever the file is deployed; the batch axis is dynamic. The
file records the temperature (metadata ``temperature``) and the SHA-256 of the weights it was
made from (``weights_sha256``), so :class:`mnistkit.infer.predict.Classifier` can refuse a
``model.onnx`` left behind by an earlier training into the same folder.

The exporter is TorchScript-based (``dynamo=False``): on torch 2.13 it exports every model in
the registry in about half a second with no extra packages; the dynamo exporter wants
``torch.export`` to trace the model first and prints pages of progress.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnistkit import rundir
from mnistkit.errors import DataError, MnistkitError
from mnistkit.fileio import write_atomic

if TYPE_CHECKING:  # torch stays unimported on the onnx-only path
    import torch

ONNX_FILE = "model.onnx"
OPSET = 17  # LayerNorm and everything our models use; onnxruntime >= 1.14 runs it


@dataclass
class ExportResult:
    """Where the file went and how well it agrees with torch.

    Attributes:
        path: the ``model.onnx`` written.
        checked: how many images the check compared (0 if no data was at hand).
        check_data: "MNIST test split" or "random images" (no data offline).
        max_abs_diff: largest |p_onnx - p_torch| over all images and classes (both calibrated).
        argmax_agree: how many of ``checked`` got the same label from both.
    """

    path: Path
    checked: int
    check_data: str
    max_abs_diff: float
    argmax_agree: int

    @property
    def ok(self) -> bool:
        # 1e-4 in probability: float32 reassociation differences are ~1e-6; a real export bug
        # (wrong layout, a missing layer) is of order 1.
        return self.argmax_agree == self.checked and self.max_abs_diff < 1e-4


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def onnx_bytes(model: torch.nn.Module) -> bytes:
    """The model as an ONNX graph (opset ``OPSET``), input ``image`` (N, 1, 28, 28) float32 in
    [0, 1] with a dynamic batch, output ``logits`` (N, 10)."""
    import torch

    model = model.eval().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation notes are not for users
        torch.onnx.export(
            model,
            (torch.zeros(2, 1, 28, 28),),
            buf,  # type: ignore[arg-type]  # a file object works; the stub says paths only
            dynamo=False,
            opset_version=OPSET,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    return buf.getvalue()


def to_onnx(
    run_dir: str | Path,
    check_images: np.ndarray | None = None,
    n_check: int = 2000,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ExportResult:
    """Export a run's model to ``RUN_DIR/model.onnx`` (atomically) and compare it with torch.

    Args:
        run_dir: a run directory written by :func:`mnistkit.train`.
        check_images: (N, 28, 28) uint8 or float images to compare on; default the first
            ``n_check`` test images of the run's data set (random images if it cannot be
            loaded).
        n_check: how many test images when ``check_images`` is not given.
        data_dir, cache_dir: where the test images come from (:func:`mnistkit.data.load`).

    Returns:
        An :class:`ExportResult`; ``.ok`` says whether the two agree.
    """
    import onnx
    import torch

    from mnistkit.calibration import temperature_of
    from mnistkit.rundir import load_model, read_metrics

    model, config = load_model(run_dir, device="cpu")
    t = temperature_of(config)
    proto = onnx.load_from_string(onnx_bytes(_divided(model, t)))
    meta = {"weights_sha256": rundir.weights_sha256(run_dir), "model": str(config.get("model")),
            "temperature": repr(t)}  # fmt: skip
    with contextlib.suppress(MnistkitError):  # an unfinished run has no metrics.json
        meta["recipe"] = str(read_metrics(run_dir).get("recipe"))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    path = Path(run_dir) / ONNX_FILE
    write_atomic(path, proto.SerializeToString())

    source = "given images"
    if check_images is None:
        dataset = str(config.get("dataset", "mnist"))
        check_images, source = _check_images(n_check, dataset, data_dir, cache_dir)
    x = np.asarray(check_images, np.float32)
    x = (x / 255.0 if x.max() > 1 else x).reshape(-1, 1, 28, 28)
    with torch.inference_mode():
        p_torch = softmax(model(torch.from_numpy(x)).numpy() / np.float32(t))
    p_onnx = softmax(onnx_session(path).run(None, {"image": x})[0])
    return ExportResult(
        path=path,
        checked=len(x),
        check_data=source,
        max_abs_diff=float(np.abs(p_onnx - p_torch).max()) if len(x) else 0.0,
        argmax_agree=int((p_onnx.argmax(1) == p_torch.argmax(1)).sum()),
    )


def _divided(model: torch.nn.Module, temperature: float) -> torch.nn.Module:
    """The model with its logits divided by ``temperature`` (as is when it is 1)."""
    import torch

    if temperature == 1.0:
        return model

    class Divided(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x) / temperature

    return Divided()


def _check_images(n: int, dataset: str, data_dir: str | os.PathLike[str] | None,
                  cache_dir: str | os.PathLike[str] | None) -> tuple[np.ndarray, str]:  # fmt: skip
    from mnistkit import data

    try:
        loaded = data.load(dataset, data_dir=data_dir, cache_dir=cache_dir, log=lambda m: None)
        name = "MNIST" if dataset == "mnist" else dataset
        return loaded.arrays[1][0][:n], f"{name} test split"
    except (DataError, MnistkitError):
        rng = np.random.default_rng(0)
        return rng.random((min(n, 256), 28, 28), dtype=np.float32), "random images"


def onnx_session(path: str | Path, threads: int | None = None):  # -> ort.InferenceSession
    """An onnxruntime session on the CPU; a friendly error when onnxruntime is missing.

    ``threads``: intra-op threads, idle ones sleeping (default: onnxruntime's, one per
    physical core, spinning while idle); a server's worker processes take their share of the
    cores each.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise MnistkitError(
            "The onnx backend needs onnxruntime: pip install 'mnistkit[onnx]'."
        ) from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: no warnings about unused initializers
    if threads is not None:
        opts.intra_op_num_threads = threads
        # Idle threads sleep rather than spin: beside a server's decoding and preprocessing,
        # spinning cost `serve --workers 1` 8.3 ms of CPU a canvas request instead of 6.1.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise MnistkitError(
            f"{path} is not a valid ONNX model ({e}); run `mnistkit export` again."
        ) from None
