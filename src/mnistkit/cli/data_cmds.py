"""``mnistkit data fetch|info|show``."""

from __future__ import annotations

import argparse
import json

import numpy as np

from mnistkit import data
from mnistkit.errors import MnistkitError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("data", help="fetch, inspect and look at a data set", parents=[common])
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        q = dsub.add_parser(name, help=help, description=help, parents=[common])
        q.add_argument("--dataset", default="mnist", choices=sorted(data.DATASETS))
        return q

    add("fetch", "fetch and verify a data set into the cache").set_defaults(handler=cmd_fetch)
    q = add("info", "counts, class histogram, source, cache path and checksums")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.set_defaults(handler=cmd_info)
    q = add("show", "write a PNG grid of sample images with their labels")
    q.add_argument("--split", default="train", choices=data.SPLITS)
    q.add_argument("--n", type=int, default=25, help="how many images (default 25)")
    q.add_argument("--start", type=int, default=0, help="index of the first image")
    q.add_argument("--out", required=True, help="PNG file to write")
    q.set_defaults(handler=cmd_show)


def _load(args: argparse.Namespace) -> data.Loaded:
    from mnistkit.cli import data_options

    return data.load(args.dataset, **data_options(args))  # type: ignore[arg-type]


def cmd_fetch(args: argparse.Namespace) -> int:
    loaded = _load(args)
    (xtr, _), (xte, _) = loaded.arrays
    print(f"{loaded.dataset}: {len(xtr)} train + {len(xte)} test images, verified (SHA-256)")
    print(f"source: {loaded.source}")
    print(f"cache:  {loaded.cache_path}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    loaded = _load(args)
    ds = data.get_dataset(loaded.dataset)
    (xtr, ytr), (xte, yte) = loaded.arrays
    hist = {s: np.bincount(y, minlength=10).tolist() for s, y in (("train", ytr), ("test", yte))}
    if args.json:
        info = {
            "dataset": loaded.dataset,
            "source": loaded.source,
            "cache": str(loaded.cache_path),
            "train": {"count": len(xtr), "shape": list(xtr.shape), "histogram": hist["train"]},
            "test": {"count": len(xte), "shape": list(xte.shape), "histogram": hist["test"]},
            "classes": list(ds.classes),
            "sha256": loaded.sha256,
        }
        print(json.dumps(info, indent=2))
        return 0
    print(f"dataset  {loaded.dataset}")
    print(f"train    {len(xtr):>6} images {xtr.shape[1]}x{xtr.shape[2]} uint8")
    print(f"test     {len(xte):>6} images {xte.shape[1]}x{xte.shape[2]} uint8")
    print(f"source   {loaded.source}")
    print(f"cache    {loaded.cache_path}")
    print()
    width = max(len(c) for c in ds.classes)
    print(f"{'class':<{width}}  {'train':>6}  {'test':>6}")
    for k, name in enumerate(ds.classes):
        print(f"{name:<{width}}  {hist['train'][k]:>6}  {hist['test'][k]:>6}")
    print()
    for name, digest in loaded.sha256.items():
        print(f"{digest}  {name}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from mnistkit.report import save_grid

    loaded = _load(args)
    (xtr, ytr), (xte, yte) = loaded.arrays
    x, y = (xtr, ytr) if args.split == "train" else (xte, yte)
    if args.n < 1 or args.start < 0 or args.start >= len(x):
        raise MnistkitError(f"--n must be at least 1 and --start within 0..{len(x) - 1}.")
    sel = slice(args.start, args.start + args.n)
    classes = data.get_dataset(loaded.dataset).classes
    captions = [f"{classes[int(lbl)]}  #{sel.start + i}" for i, lbl in enumerate(y[sel])]
    title = f"{loaded.dataset} {args.split}: images {sel.start}..{sel.start + len(y[sel]) - 1}"
    save_grid(x[sel], captions, args.out, title=title)
    print(f"wrote {args.out} ({len(y[sel])} images)")
    return 0
