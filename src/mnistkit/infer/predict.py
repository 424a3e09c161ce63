"""``Classifier``: a trained run that reads a person's digits, with torch or onnxruntime.

::

    clf = mnistkit.load("runs/fast")                 # or backend="onnx" after `mnistkit export`
    pred = clf.predict("my_digit.jpg")               # -> Prediction(label=7, p=0.998)
    pred.input28                                     # the 28x28 image the model saw
    clf.read("postcode.jpg").number                  # -> "75013"; .digits: each digit read
    clf.predict(x_test[:5])                          # a batch (N, 28, 28) -> N predictions
    mnistkit.load()                                  # the default model (``default_model``)

Probabilities are calibrated: both backends divide the logits by the run's temperature
(``calibration``; the exported ONNX graph includes the division).

The onnx backend never imports torch (:mod:`mnistkit.rundir` reads the run without it): a
deployment needs numpy, Pillow, OpenCV (preprocessing) and onnxruntime.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, overload

import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits

from mnistkit import rundir
from mnistkit.calibration import temperature_of
from mnistkit.errors import MnistkitError
from mnistkit.infer.export import ONNX_FILE, onnx_session, softmax
from mnistkit.infer.images import MAX_BYTES, MAX_PIXELS, ImageSource
from mnistkit.infer.prediction import (  # noqa: F401  (re-exported: their home before)
    MAX_INK,
    MIN_CONFIDENCE,
    DigitRead,
    Prediction,
    make_prediction,
    reading_prediction,
)
from mnistkit.infer.preprocess import Preprocessed, preprocess
from mnistkit.infer.read import read_digits
from mnistkit.infer.verifier import Verifier, load_verifier
from mnistkit.rundir import RunDir

Forward = Callable[[np.ndarray], np.ndarray]  # (N, 1, 28, 28) float32 -> logits (N, 10)


class Classifier:
    """A trained model plus MNIST-style preprocessing.

    Build one with :meth:`load`. ``predict`` and ``predict_batch`` take any image source that
    :func:`mnistkit.preprocess.preprocess` does; ``predict_arrays`` takes 28x28 images as is.
    """

    def __init__(
        self,
        forward: Forward,
        info: dict[str, Any],
        max_bytes: int = MAX_BYTES,
        max_pixels: int = MAX_PIXELS,
        batch_size: int = 512,
        verifier: Verifier | None = None,
    ):
        self._forward = forward
        self.info = info
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.batch_size = batch_size
        # The run's segmentation verifier (mnistkit.infer.verifier), for read(); None in runs
        # trained before it, which read numbers without it.
        self.verifier = verifier

    @classmethod
    def load(
        cls,
        run_dir: str | Path | None = None,
        backend: str = "torch",
        device: str = "cpu",
        max_bytes: int = MAX_BYTES,
        max_pixels: int = MAX_PIXELS,
        *,
        cache_dir: str | Path | None = None,
        data_dir: str | Path | None = None,
        quiet: bool = False,
        threads: int | None = None,
    ) -> Classifier:
        """Load a run directory for prediction.

        Args:
            run_dir: written by :func:`mnistkit.train` (and ``mnistkit export`` for onnx).
                None: the default model, trained into the cache on first use
                (:func:`mnistkit.infer.default_model.ensure_default_model`).
            backend: "torch", or "onnx" (onnxruntime on ``model.onnx``, no torch import).
            device: torch device for the torch backend ("cpu", "cuda").
            max_bytes, max_pixels: limits on each input image.
            cache_dir, data_dir, quiet: for the default model: the cache, where MNIST comes
                from if not cached, and no progress line.
            threads: CPU threads for inference (torch's, for the whole process, or onnxruntime's
                intra-op threads, sleeping when idle), and for the BLAS libraries loaded
                (OpenCV's own OpenBLAS, numpy's), for the whole process; default the libraries'
                own choice.

        Returns:
            A :class:`Classifier`; ``.info`` holds recipe, test_accuracy, model, backend,
            temperature...
        """
        if backend not in ("torch", "onnx"):
            raise MnistkitError(f"backend must be 'torch' or 'onnx', not {backend!r}.")
        if run_dir is None:
            from mnistkit.infer.default_model import ensure_default_model

            run_dir = ensure_default_model(cache_dir=cache_dir, data_dir=data_dir,
                                           onnx=backend == "onnx",
                                           log=None if quiet else _stderr)  # fmt: skip
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise MnistkitError(
                f"{run_dir} is not a run directory (train one with `mnistkit train`)."
            )
        if threads is not None:
            # OpenCV's bundled OpenBLAS (2 threads here) spins a second core while a number
            # is read: a 6-digit number took 170 ms of CPU for 85 ms of wall time, and 85 ms of
            # CPU with it limited (the EPYC, 1 thread asked); `serve --workers 2` answered 546-551
            # canvases a second with it limited, 388-502 without (benchmarks/RESULTS.md).
            threadpool_limits(threads, user_api="blas")
        if backend == "torch":
            forward, config = _torch_forward(run_dir, device, threads)
        else:
            forward, config = _onnx_forward(run_dir, threads)
        info = {**RunDir(run_dir).metrics(), "model": config.get("model")}
        info.update(backend=backend, run_dir=str(run_dir), temperature=temperature_of(config))
        verifier = load_verifier(run_dir)
        info["verifier"] = verifier is not None
        return cls(forward, info, max_bytes=max_bytes, max_pixels=max_pixels, verifier=verifier)

    def predict_arrays(self, x28: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for 28x28 images taken as is.

        Args:
            x28: (N, 28, 28) or (N, 1, 28, 28); float in [0, 1] or uint8 0..255; ink high.

        Returns:
            (N, 10) float32 probabilities.
        """
        x = np.asarray(x28)
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        x = x.reshape(-1, 1, 28, 28)
        out = [
            softmax(self._forward(x[i : i + self.batch_size]))
            for i in range(0, len(x), self.batch_size)
        ]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 10), np.float32)

    def preprocess(self, image: ImageSource) -> Preprocessed:
        return preprocess(image, max_bytes=self.max_bytes, max_pixels=self.max_pixels)

    @overload
    def predict(self, image: np.ndarray) -> Prediction | list[Prediction]: ...
    @overload
    def predict(self, image: str | os.PathLike[str] | bytes | IO[bytes] | Image.Image) -> Prediction: ...  # fmt: skip

    def predict(self, image: ImageSource) -> Prediction | list[Prediction]:
        """Preprocess one image the MNIST way and classify it; or a batch, as Keras does.

        Args:
            image: a path, bytes, a file object, a PIL image or an array. An array of shape
                (N, 28, 28) (or (N, 28, 28, 1), (N, 1, 28, 28)), uint8 or float in [0, 1],
                ink high, is a batch of MNIST-style images, as ``model.predict(x_test[:5])``
                takes them in the tutorials; a (28, 28) array is one such image.

        Returns:
            One :class:`Prediction`, or a list of N for a batch array.
        """
        if isinstance(image, np.ndarray) and _is_batch(image):
            return self.predict_preprocessed([preprocess(a) for a in image.reshape(-1, 28, 28)])
        return self.read(image)

    def read(self, image: ImageSource) -> Prediction:
        """Every digit of an image, left to right: a number, or one digit.

        Args:
            image: a path, bytes, a file object, a PIL image or an array (as :meth:`predict`).

        Returns:
            A :class:`Prediction` with ``number`` and ``digits``; ``label``, ``probabilities``,
            ``top`` and ``input28`` when exactly one digit was found, None otherwise.

        Raises:
            ImageError / ImageTooLargeError: the image cannot be read.
        """
        reading = read_digits(image, self.predict_arrays, self.max_bytes, self.max_pixels,
                              verifier=self.verifier)  # fmt: skip
        return reading_prediction(reading)

    def predict_batch(self, images: Sequence[ImageSource]) -> list[Prediction]:
        """:meth:`read` each image (each reading is one forward pass of its candidate digits).

        Raises:
            ImageError / ImageTooLargeError: for the first image that cannot be read.
        """
        return [self.read(im) for im in images]

    def predict_preprocessed(self, items: Sequence[Preprocessed]) -> list[Prediction]:
        """Classify images that :meth:`preprocess` already made (the CLI keeps errors apart)."""
        if not items:
            return []
        probs = self.predict_arrays(np.stack([it.image for it in items]))
        return [make_prediction(p, it) for p, it in zip(probs, items, strict=True)]


def _is_batch(a: np.ndarray) -> bool:
    """(N, 28, 28), (N, 28, 28, 1) or (N, 1, 28, 28); never an (H, W, 3 or 4) color image."""
    shape = a.shape
    return (a.ndim == 3 and shape[1:] == (28, 28)) or (
        a.ndim == 4 and shape[1:] in ((28, 28, 1), (1, 28, 28))
    )


def _stderr(message: str) -> None:
    import sys

    print(f"mnistkit: {message}", file=sys.stderr, flush=True)


def _torch_forward(
    run_dir: Path, device: str, threads: int | None = None
) -> tuple[Forward, dict[str, Any]]:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    model, config = RunDir(run_dir).load_model(device)
    t = temperature_of(config)

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return (model(torch.from_numpy(x).to(device)).float() / t).cpu().numpy()

    return forward, config


def _onnx_forward(run_dir: Path, threads: int | None = None) -> tuple[Forward, dict[str, Any]]:
    path = run_dir / ONNX_FILE
    if not path.is_file():
        raise MnistkitError(f"{path} is missing: run `mnistkit export {run_dir}` first.")
    run = RunDir(run_dir)
    config = run.config()
    session = onnx_session(path, threads)
    meta = session.get_modelmeta().custom_metadata_map
    weights = run / rundir.WEIGHTS
    if (
        "weights_sha256" in meta
        and weights.is_file()
        and meta["weights_sha256"] != run.weights_sha256()
    ):
        raise MnistkitError(
            f"{path} was exported from other weights than {weights.name}: "
            f"run `mnistkit export {run_dir}` again."
        )
    t = temperature_of(config)
    # A graph exported with its temperature divides by it itself; one exported before runs
    # were calibrated (no "temperature" in its metadata) gives the raw logits.
    if "temperature" in meta and not math.isclose(float(meta["temperature"]), t, rel_tol=1e-9):
        raise MnistkitError(
            f"{path} was exported with temperature {meta['temperature']}, not the run's {t}: "
            f"run `mnistkit export {run_dir}` again."
        )
    divide = 1.0 if "temperature" in meta else t
    name = session.get_inputs()[0].name

    def forward(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: x})[0]) / np.float32(divide)

    return forward, config
