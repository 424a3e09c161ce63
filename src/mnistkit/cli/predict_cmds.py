"""``mnistkit predict [RUN_DIR] IMAGE|DIR|- ...`` and ``mnistkit export RUN_DIR``.

Without a run directory, ``predict`` uses the default model (:mod:`mnistkit.infer.default_model`),
trained into the cache on first use. The first argument is a run directory when it is a folder
with a ``config.json``; any other folder is searched for images.

Each input that cannot be read gets its own error line (or ``"error"`` in JSON) and the rest
are still predicted; the exit status is then 2. Folders are searched recursively for image
files, in sorted order, and classified in batches.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnistkit import rundir
from mnistkit.errors import ImageError, MnistkitError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
CHUNK = 256  # inputs expanded and read together (each reading is one forward pass)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    help = "read digits and numbers in images: files, folders (recursive) or - for stdin"
    p = sub.add_parser("predict", help=help, description=help, parents=[common],
                       usage="mnistkit predict [-h] [options] [RUN_DIR] IMAGE [IMAGE ...]")  # fmt: skip
    p.add_argument("inputs", metavar="[RUN_DIR] IMAGE", nargs="+",
                   help="a run directory written by `mnistkit train` (default: the default model, "
                        "trained into the cache on first use), then image files, folders, "
                        "or - (stdin)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    p.add_argument("--top-k", type=int, default=3, help="how many guesses to show (default 3)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"],
                   help="inference engine (onnx needs `mnistkit export` first)")  # fmt: skip
    p.add_argument("--save-inputs", metavar="DIR",
                   help="write the 28x28 image the model saw for each input, as PNG")  # fmt: skip
    p.set_defaults(handler=cmd_predict)

    help = "export a run's model (ONNX) and check it against torch"
    q = sub.add_parser("export", help=help, description=help, parents=[common])
    q.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `mnistkit train`")
    q.add_argument("--format", default="onnx", choices=["onnx"], help="only onnx for now")
    q.set_defaults(handler=cmd_export)


@dataclass
class Item:
    name: str  # as shown: the path given or found, or "-"
    source: Any  # a Path, bytes (stdin) or None when ``error`` is set
    error: str | None = None


def expand(inputs: list[str]) -> Iterator[Item]:
    """Files as given, folders searched recursively (sorted, image suffixes only), - as stdin."""
    for arg in inputs:
        if arg == "-":
            yield Item("-", sys.stdin.buffer.read())
            continue
        path = Path(arg)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            if not found:
                kinds = ", ".join(sorted(IMAGE_SUFFIXES))
                yield Item(arg, None, f"{arg} is a folder with no images in it ({kinds}).")
            yield from (Item(str(p), p) for p in found)
        elif not path.exists():
            yield Item(arg, None, f"{arg} does not exist.")
        else:
            yield Item(arg, path)


def chunks(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def split_run_dir(inputs: list[str]) -> tuple[str | None, list[str]]:
    """``(RUN_DIR or None for the default model, the images)`` from predict's arguments."""
    first = Path(inputs[0])
    # Missing, with no image suffix, and images after it: a mistyped run directory, most likely.
    if (
        len(inputs) > 1
        and inputs[0] != "-"
        and not first.exists()
        and (first.suffix.lower() not in IMAGE_SUFFIXES)
    ):
        raise MnistkitError(f"{inputs[0]} does not exist: it is neither a run directory "
                            f"nor an image.")  # fmt: skip
    if inputs[0] == "-" or not rundir.is_run_dir(inputs[0]):
        return None, inputs
    if len(inputs) == 1:
        raise MnistkitError(f"{inputs[0]} is a run directory: give the images to read after it.")
    return inputs[0], inputs[1:]


def load_classifier(args: argparse.Namespace, run_dir: str | None, **kw: Any) -> Any:
    """The run's classifier, or the default model's (trained into the cache on first use)."""
    from mnistkit.infer.predict import Classifier

    return Classifier.load(run_dir, backend=args.backend, cache_dir=getattr(args, "cache_dir", None),
                           data_dir=getattr(args, "data_dir", None),
                           quiet=getattr(args, "quiet", False), **kw)  # fmt: skip


def cmd_predict(args: argparse.Namespace) -> int:
    if args.top_k < 1 or args.top_k > 10:
        raise MnistkitError(f"--top-k must be within 1..10, not {args.top_k}.")
    run_dir, inputs = split_run_dir(args.inputs)
    clf = None  # loaded at the first readable input: a mistyped name trains no default model
    save_dir = Path(args.save_inputs) if args.save_inputs else None
    results: list[dict[str, Any]] = []
    failed = 0
    table = Table(args.top_k) if not args.json else None
    for chunk in chunks(expand(inputs), CHUNK):
        preds = {}
        if any(item.error is None for item in chunk):
            clf = clf or load_classifier(args, run_dir)
            for item in chunk:
                if item.error is None:
                    try:
                        preds[id(item)] = clf.read(item.source)
                    except ImageError as e:
                        item.error = str(e)
        for item in chunk:
            if item.error is not None:
                failed += 1
                row: dict[str, Any] = {"file": item.name, "error": item.error}
            else:
                pred = preds[id(item)]
                row = {"file": item.name, **pred.to_dict(args.top_k)}
                if save_dir is not None and pred.digits:
                    # Several digits: their 28x28 images side by side, left to right.
                    seen = np.concatenate([d.input28 for d in pred.digits], axis=1)
                    row["input28"] = str(save_input(save_dir, item.name, seen))
            if table is not None:
                table.print(row)
            else:
                results.append(row)
    if table is None:
        print(json.dumps(results, indent=2))
    return 2 if failed else 0


class Table:
    """One line per input, printed as soon as it is known: the number read (one digit or
    several), p (of the digit; of the least sure digit of a number) and the top guesses (of a
    single digit)."""

    def __init__(self, top_k: int):
        self.top_k = top_k
        self.header = False

    def print(self, row: dict[str, Any]) -> None:
        width = 9 * self.top_k
        if not self.header:
            print(f"{'number':>8}  {'p':>5}  {'top ' + str(self.top_k):<{width}}  file")
            self.header = True
        if "error" in row:
            msg = row["error"] if row["file"] in row["error"] else f"{row['file']}: {row['error']}"
            print(f"{'-':>8}  {'-':>5}  {'error':<{width}}  {msg}")
            return
        top = "  ".join(f"{t['label']} {t['p']:.3f}" for t in row["top"] or [])
        note = f"  (not a digit? {row['not_digit']})" if row["not_digit"] else ""
        ps = [d["p"] for d in row["digits"]]
        p = f"{min(ps):5.3f}" if ps else "-"
        print(f"{row['number'] or '-':>8}  {p:>5}  {top or '-':<{width}}  {row['file']}{note}")


def save_input(folder: Path, name: str, image28: Any) -> Path:
    """The 28x28 image as an 8-bit PNG named after its input (path separators -> __)."""
    from PIL import Image

    from mnistkit.fileio import write_atomic

    stem = "stdin" if name == "-" else name.strip("/").replace("/", "__").replace("\\", "__")
    path = folder / f"{stem}.png"
    buf = io.BytesIO()
    Image.fromarray((np.clip(image28, 0, 1) * 255).round().astype(np.uint8), "L").save(buf, "PNG")
    write_atomic(path, buf.getvalue())
    return path


def cmd_export(args: argparse.Namespace) -> int:
    from mnistkit.infer.export import to_onnx

    rundir.read_config(args.run_dir)  # a missing or damaged run: its own line, before the lock
    with rundir.hold(args.run_dir, training=False):  # not while a training rewrites the weights
        res = to_onnx(args.run_dir, data_dir=getattr(args, "data_dir", None),
                      cache_dir=getattr(args, "cache_dir", None))  # fmt: skip
    size = res.path.stat().st_size
    print(f"wrote {res.path} ({size / 1e3:.0f} kB, dynamic batch)")
    print(
        f"checked against torch on {res.checked} {res.check_data}: labels agree "
        f"{res.argmax_agree}/{res.checked}, max |p_onnx - p_torch| = {res.max_abs_diff:.1e}"
    )
    if not res.ok:
        print("mnistkit: error: the ONNX model does not agree with torch", file=sys.stderr)
        return 1
    return 0
