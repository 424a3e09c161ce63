"""A torchrun rank for tests/test_distributed.py, started with RANK/WORLD_SIZE/MASTER_* set.

``python tests/dist_worker.py step OUT.json`` -- each rank trains tiny models for a few steps
under DataParallel and rank 0 compares the weights with one process training the same global
batches; the verdicts go to OUT.json.

``python tests/dist_worker.py cli IDX_DIR DIE_AT -- MNISTKIT ARGS`` -- registers the synthetic
IDX files in IDX_DIR as data set "tiny" and runs the mnistkit command line; with DIE_AT >= 0,
rank 1 exits abruptly (``die``) or stops answering (``hang``) at that training step.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import make_arrays, tiny_dataset, write_idx_dir  # noqa: E402

from mnistkit import data
from mnistkit.models import create_model  # noqa: E402
from mnistkit.recipes import Recipe  # noqa: E402
from mnistkit.training import distributed
from mnistkit.training import loop as engine  # noqa: E402
from mnistkit.training.loop import Hooks, Trainer  # noqa: E402
from mnistkit.training.optim import create_optimizer  # noqa: E402
from mnistkit.training.step import Split, to_split  # noqa: E402

# No batch norm (on the CPU each rank normalises by its own slice, see mnistkit.training.distributed):
# a conv net in channels-last with label smoothing, and an MLP with an L1 penalty.
RECIPES = [
    Recipe(name="conv", model="convnet", optimizer="sgd", lr=0.05, batch_size=37, epochs=1,
           optimizer_kwargs={"momentum": 0.9}, label_smoothing=0.1, channels_last=True),
    Recipe(name="mlp", model="mlp-l1", model_kwargs={"dropout": 0.0}, optimizer="sgd",
           lr=0.01, batch_size=37, epochs=1, l1=1e-3),
]  # fmt: skip


def train(recipe: Recipe, split: Split, parallel: bool) -> list[dict[str, torch.Tensor]]:
    """The weights after every step."""
    torch.manual_seed(0)
    model = create_model(recipe.model, **recipe.model_kwargs)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = create_optimizer(
        recipe.optimizer, model.parameters(), recipe.lr, **recipe.optimizer_kwargs
    )
    ctx = distributed.Context(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), 0,
                              torch.device("cpu"))  # fmt: skip
    dp = distributed.DataParallel(ctx, model) if parallel else None
    steps: list[dict[str, torch.Tensor]] = []

    def keep(get_model: Callable[[], torch.nn.Module], step: int, seconds: float) -> None:
        steps.append({k: v.clone() for k, v in get_model().state_dict().items()})

    trainer = Trainer(model, opt, recipe, torch.Generator().manual_seed(0), parallel=dp)
    trainer.fit(split, None, Hooks(probe=keep))
    return steps


def step_check(out: str) -> None:
    distributed.setup(torch.device("cpu"), 37)
    (x, y), _ = make_arrays(n_train=100, n_test=1)
    split = to_split(
        torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y).long(), torch.device("cpu")
    )
    verdicts = {}
    for recipe in RECIPES:
        # 100 examples in batches of 37: slices of 18 and 19, then a last batch of 26 (13 + 13).
        ddp, ref = train(recipe, split, parallel=True), train(recipe, split, parallel=False)
        for step in (0, 2):
            verdicts[f"{recipe.name}, step {step + 1}"] = max(
                (ddp[step][k] - ref[step][k]).abs().max().item() / ref[step][k].abs().max().item()
                for k in ref[step]
            )
    if distributed.is_main_process():
        Path(out).write_text(json.dumps(verdicts))
    distributed.teardown()


def cli(idx_dir: str, die_at: int, mode: str, argv: list[str]) -> int:
    raw = {p.name: p.read_bytes() for p in Path(idx_dir).iterdir()}
    data.DATASETS["tiny"] = tiny_dataset(raw)
    if die_at >= 0 and os.environ["RANK"] == "1":
        step, calls = engine.train_step, [0]

        def dying_step(*args, **kwargs):
            calls[0] += 1
            if calls[0] == die_at:
                if mode == "die":
                    os._exit(3)
                time.sleep(3600)
            return step(*args, **kwargs)

        engine.train_step = dying_step  # type: ignore[assignment]
    from mnistkit.cli import main

    return main(argv)


if __name__ == "__main__":
    if sys.argv[1] == "step":
        step_check(sys.argv[2])
    elif sys.argv[1] == "write-idx":
        write_idx_dir(Path(sys.argv[2]), make_arrays(n_train=int(sys.argv[3]), n_test=50))
    else:
        sep = sys.argv.index("--")
        raise SystemExit(cli(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[sep + 1 :]))
