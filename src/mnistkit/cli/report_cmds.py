"""``mnistkit compare RUN_DIR RUN_DIR ... [--out compare.png] [--json]``."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

COLUMNS = [  # (header, key, format): the table `compare` prints
    ("run", "run", "{}"),
    ("recipe", "name", "{}"),
    ("test acc", "test_accuracy", "pct"),
    ("test loss", "test_loss", "{:.4f}"),
    ("train acc", "train_accuracy", "pct"),
    ("epochs", "epochs", "{}"),
    ("seconds", "seconds", "{:.1f}"),
    ("parameters", "parameters", "{:,}"),
]


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    help = "compare runs: a table of accuracy, loss, time and size, and optionally a plot"
    p = sub.add_parser("compare", help=help, description=help, parents=[common])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    p.add_argument("--out", help="also write a PNG plot: test accuracy against training time")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.set_defaults(handler=cmd_compare)


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "pct":
        return f"{100 * float(value):.2f} %"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned text columns: text left, numbers right."""
    cells = [[h for h, _, _ in COLUMNS]]
    cells += [[_cell(r.get(key), fmt) for _, key, fmt in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = []
    for row in cells:
        parts = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]  # fmt: skip
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def cmd_compare(args: argparse.Namespace) -> int:
    from mnistkit.report import compare_rows

    rows = compare_rows(args.runs)
    # Label plot points by recipe, adding the folder when two runs share a recipe.
    seen = Counter(r["name"] for r in rows)
    for r in rows:
        r["label"] = r["name"] if seen[r["name"]] == 1 else f"{r['name']} ({Path(r['run']).name})"
    if args.out:
        from mnistkit.report.plots import plot_compare

        plot_compare([{**r, "name": r["label"]} for r in rows], args.out)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    if args.out:
        from mnistkit.cli import log

        log(args, f"wrote {args.out}")
    return 0
