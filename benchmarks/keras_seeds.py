"""The seed tutorials' own Keras programs, timed on this machine: the anchor mnistkit is measured
against. Optional: needs TensorFlow, which mnistkit never depends on. In a separate venv:

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu
    /tmp/tfvenv/bin/python benchmarks/keras_seeds.py ~/.cache/mnistkit/mnist [dense512 convnet ...]

It reads the same verified raw IDX files from mnistkit's cache (``mnistkit data info`` prints
the folder), builds each seed's model exactly as its file does (seeds 000, 001, 003), trains it
with the seed's ``fit`` call, and prints test accuracy and the seconds ``fit`` took, next to
``mnistkit reproduce``'s figures on the same machine (pass them with ``--ours NAME=SECONDS``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def models(keras):
    """Each seed's Sequential/functional model, its compile() arguments and fit() arguments."""
    from keras import layers, regularizers

    def dense512():  # seed 000
        m = keras.Sequential([keras.Input((784,)), layers.Dense(512, activation="relu"),
                              layers.Dense(10, activation="softmax")])  # fmt: skip
        return m, "rmsprop", {"epochs": 5, "batch_size": 128}, "flat"

    def mlp_l1():  # seed 001, second network; unscaled pixels as the seed fed them
        l1 = regularizers.l1(0.0001)
        m = keras.Sequential([keras.Input((784,)),
                              layers.Dense(128, activation="relu", kernel_regularizer=l1),
                              layers.Dropout(0.01),
                              layers.Dense(32, activation="relu", kernel_regularizer=l1),
                              layers.Dropout(0.01), layers.Dense(10, activation="softmax")])  # fmt: skip
        opt = keras.optimizers.RMSprop(learning_rate=0.001)
        return m, opt, {"epochs": 20, "batch_size": 128}, "flat255"

    def lenet():  # seed 001, LeNet
        m = keras.Sequential([keras.Input((28, 28, 1)),
                              layers.Conv2D(6, 3, activation="relu"), layers.AveragePooling2D(2),
                              layers.Conv2D(16, 3, activation="relu"), layers.AveragePooling2D(2),
                              layers.Conv2D(120, 3, activation="relu"), layers.Flatten(),
                              layers.Dense(84, activation="relu"),
                              layers.Dense(10, activation="softmax")])  # fmt: skip
        opt = keras.optimizers.RMSprop(learning_rate=0.001)
        return m, opt, {"epochs": 10, "batch_size": 128}, "image"

    def convnet():  # seed 003
        inputs = keras.Input((28, 28, 1))
        x = layers.Conv2D(32, 3, activation="relu")(inputs)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(64, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(128, 3, activation="relu")(x)
        x = layers.Flatten()(x)
        m = keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
        return m, "rmsprop", {"epochs": 5, "batch_size": 64}, "image"

    return {"dense512": dense512, "mlp-l1": mlp_l1, "lenet": lenet, "convnet": convnet}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache", type=Path, help="folder with the four raw IDX files")
    ap.add_argument("names", nargs="*", default=["dense512", "mlp-l1", "lenet", "convnet"])
    ap.add_argument("--ours", action="append", default=[], metavar="NAME=SECONDS")
    ap.add_argument("--json", action="store_true", help="one JSON object per model instead")
    args = ap.parse_args()
    import keras
    import tensorflow as tf

    x_train = read_idx(args.cache / "train-images-idx3-ubyte")
    y_train = read_idx(args.cache / "train-labels-idx1-ubyte")
    x_test = read_idx(args.cache / "t10k-images-idx3-ubyte")
    y_test = read_idx(args.cache / "t10k-labels-idx1-ubyte")
    ours = dict(item.split("=") for item in args.ours)
    versions = f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    if not args.json:
        print(f"{versions}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
        print(
            f"{'seed model':<10}  {'test acc':>8}  {'fit s':>7}  {'mnistkit s':>10}  {'ratio':>6}"
        )
    for name in args.names:
        keras.utils.set_random_seed(0)
        model, optimizer, fit_kw, layout = models(keras)[name]()
        model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])

        def shape(x, layout=layout):
            if layout == "image":
                return x.reshape(len(x), 28, 28, 1).astype("float32") / 255
            x = x.reshape(len(x), 784).astype("float32")
            return x if layout == "flat255" else x / 255

        t0 = time.perf_counter()
        model.fit(shape(x_train), keras.utils.to_categorical(y_train), verbose=0, **fit_kw)
        seconds = time.perf_counter() - t0
        _, acc = model.evaluate(shape(x_test), keras.utils.to_categorical(y_test), verbose=0)
        if args.json:
            print(json.dumps({"model": name, "test_accuracy": float(acc), "fit_seconds": seconds,
                              "versions": versions}), flush=True)  # fmt: skip
            continue
        mine = float(ours[name]) if name in ours else None
        ratio = f"{seconds / mine:5.1f}x" if mine else "     -"
        print(f"{name:<10}  {100 * acc:7.2f}%  {seconds:7.1f}  {mine or float('nan'):>10.1f}  {ratio}",
              flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
