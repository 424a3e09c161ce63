"""Is a candidate digit one whole digit? A small net that reads the segmentation's 28x28s.

The digit model was trained on whole MNIST digits only, so it reads two touching digits
squeezed into 20x20, or a digit's fragment, with p 0.6-0.95 (``segment.Costs``). The classical
fix (a recognizer trained on its own segmentation's mistakes): a second net, trained on the
candidates the lattice itself cuts from numbers of training digits, each labelled whole (one
digit, all of it) or garbage (two merged, a fragment, a digit with a stub of its neighbour, a
remnant). Its log-odds of "whole" (times ``segment.Costs.verify``) is added to each candidate's score in
the path search: on held-out numbers of training digits that gained 1 point of exact numbers
over its log p(whole) (benchmarks/verify_segments.py).

Small enough to run in numpy (no torch, no ONNX file: both backends read it the same way):
a 5x5 and a 3x3 convolution (16 and 32 channels), each with 2x2 max pooling, 64 hidden
units, one logit. Runs trained before it grew (8, 16 and 32) read with their own widths.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from mnistkit.errors import MnistkitError

VERIFIER_FILE = "verifier.safetensors"
# Channels of the two convolutions, and hidden units: twice the first verifier's (8, 16, 32).
# Numbers of training digits read by `fast` trained on the first 14,500 (benchmarks/RESULTS.md,
# "A wider verifier"), exact: 84.9 -> 85.8 % and 82.5 -> 83.0 % (800 each, replayed), 85.4 ->
# 85.7 % (1,000, read); more data (6,000 numbers) or more overlap in them gained nothing.
WIDTHS = (16, 32, 64)


def shapes(c1: int, c2: int, fc: int) -> dict[str, tuple[int, ...]]:
    """Name -> shape of each weight, as torch stores them (out, in, kh, kw) / (out, in)."""
    return {
        "conv1.weight": (c1, 1, 5, 5), "conv1.bias": (c1,),
        "conv2.weight": (c2, c1, 3, 3), "conv2.bias": (c2,),
        "fc1.weight": (fc, c2 * 7 * 7), "fc1.bias": (fc,),
        "fc2.weight": (1, fc), "fc2.bias": (1,),
    }  # fmt: skip


def _relu_pool(y: np.ndarray) -> np.ndarray:
    """ReLU and 2x2 max pooling, channels last: (N, H, W, C) -> (N, H/2, W/2, C)."""
    n, h, w, c = y.shape
    return np.maximum(y, 0).reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _conv_one(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """'same' convolution of one-channel images, (N, H, W) -> (N, H, W, O): OpenCV's filter
    on the images stacked, each in its own zero border (as fast as im2col for 200 images,
    without its copy)."""
    n, h, ww = x.shape
    p = w.shape[-1] // 2
    tall = np.pad(x, ((0, 0), (p, p), (p, p))).reshape(n * (h + 2 * p), ww + 2 * p)
    out = [cv2.filter2D(tall, -1, w[o, 0], borderType=cv2.BORDER_CONSTANT)
           .reshape(n, h + 2 * p, ww + 2 * p)[:, p:-p, p:-p] for o in range(len(w))]  # fmt: skip
    return np.stack(out, axis=-1) + b


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """'same' convolution, channels last, by im2col: (N, H, W, C) -> (N, H, W, O)."""
    n, h, ww, c = x.shape
    p = w.shape[-1] // 2
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(padded, w.shape[2:], axis=(1, 2))
    cols = win.reshape(n * h * ww, -1)  # (N*H*W, C*kh*kw), torch's weight order
    return (_matmul(cols, w.reshape(len(w), -1).T) + b).reshape(n, h, ww, -1)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` by OpenCV: numpy's OpenBLAS wakes threads that spin after the call and slowed
    the rest of a read on 2 cores (a number: 75 -> 144 ms CPU, the verifier itself 22 ms)."""
    a, b = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
    return np.asarray(cv2.gemm(a, b, 1.0, None, 0.0))  # type: ignore[call-overload]


class Verifier:
    """The net's weights as numpy arrays; calling it on 28x28s gives the log-odds that each
    is one whole digit."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        widths = [(np.shape(weights[k]) or (0,))[0] if k in weights else 0
                  for k in ("conv1.weight", "conv2.weight", "fc1.weight")]  # fmt: skip
        want = shapes(*widths)
        for name, shape in want.items():
            if name not in weights or tuple(weights[name].shape) != shape:
                raise ValueError(f"verifier weights: {name} missing or not of shape {shape}.")
        self.w = {k: np.asarray(weights[k], np.float32) for k in want}

    def __call__(self, x28: np.ndarray) -> np.ndarray:
        """(N, 28, 28) float in [0, 1] -> (N,) log-odds of 'one whole digit', nats."""
        w = self.w
        x = np.ascontiguousarray(np.asarray(x28, np.float32).reshape(-1, 28, 28))
        x = _relu_pool(_conv_one(x, w["conv1.weight"], w["conv1.bias"]))  # (N, 14, 14, c1)
        x = _relu_pool(_conv(x, w["conv2.weight"], w["conv2.bias"]))  # (N, 7, 7, c2)
        flat = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # torch's (C, H, W) order
        h = np.maximum(_matmul(flat, w["fc1.weight"].T) + w["fc1.bias"], 0)
        return (_matmul(h, w["fc2.weight"].T) + w["fc2.bias"])[:, 0]


def load_verifier(run_dir: str | os.PathLike[str]) -> Verifier | None:
    """The run's verifier, or None when it has none (a run trained before it existed).

    Raises:
        MnistkitError: the file is there but holds no verifier's weights.
    """
    path = Path(run_dir) / VERIFIER_FILE
    if not path.is_file():
        return None
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return Verifier(load_file(str(path)))
    except (SafetensorError, ValueError, OSError) as e:
        raise MnistkitError(
            f"{path} is not a segmentation verifier ({e}); delete it to read numbers without "
            "one, or write a new one with mnistkit.verifier_train.add_verifier."
        ) from e
