"""Our own recipes on real MNIST: `fast` reaches its 99 %, `best`'s machinery learns.

Accuracy only, never time: the speed of these recipes is measured by `mnistkit bench train`.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mnistkit.models import TTANet, create_model
from mnistkit.recipes import RECIPES, get_recipe
from mnistkit.training.loop import Hooks, Trainer
from mnistkit.training.optim import create_optimizer
from mnistkit.training.speed import resolve_precision
from mnistkit.training.step import evaluate, to_split


@pytest.mark.mnist
@pytest.mark.slow
def test_fast_reaches_99_percent(fast_run):
    """The recipe's promise, on the full data set (one epoch, seed 0, two threads)."""
    assert fast_run.metrics["test_accuracy"] >= 0.99, fast_run.metrics
    assert fast_run.metrics["epochs"] == 1


@pytest.mark.mnist
def test_best_machinery_learns_real_digits(mnist):
    """`best`'s committee, augmentation, weight decay, EMA, dropout and TTA together, on 6,000 real
    training digits for two epochs: held-out digits are read far above chance, and the EMA
    weights (not the last iterate) are what the model ends with."""
    (xtr, ytr), (xte, yte) = mnist
    recipe = replace(get_recipe("best"), epochs=2, schedule_kwargs={"warmup_epochs": 0.2},
                     ema=0.9)  # fmt: skip
    cpu = torch.device("cpu")
    train_split = to_split(torch.from_numpy(xtr[:6000].copy()).unsqueeze(1),
                           torch.from_numpy(ytr[:6000].astype("int64")), cpu)  # fmt: skip
    test_split = to_split(torch.from_numpy(xte[:1000].copy()).unsqueeze(1),
                          torch.from_numpy(yte[:1000].astype("int64")), cpu)  # fmt: skip
    torch.manual_seed(0)
    model = create_model(recipe.model, **recipe.model_kwargs)
    assert isinstance(model, TTANet) and model.tta == 5
    model = model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(recipe.optimizer, model.parameters(), recipe.lr,
                                 **recipe.optimizer_kwargs)  # fmt: skip
    last_iterate: dict[str, torch.Tensor] = {}

    class Remember:  # the weights before the EMA replaces them
        def save(self, epoch, history):
            last_iterate.update({k: v.clone() for k, v in model.state_dict().items()})

    trainer = Trainer(model, optimizer, replace(recipe, epochs=2),
                      torch.Generator().manual_seed(0))  # fmt: skip
    history = trainer.fit(train_split, test_split, Hooks(checkpoint=Remember()))
    assert history[1]["train_loss"] < history[0]["train_loss"]
    accuracy = evaluate(model, test_split)["accuracy"]
    assert accuracy > 0.9, accuracy
    conv = next(k for k, v in model.state_dict().items() if v.dim() == 4)  # the first kernel
    assert not torch.equal(model.state_dict()[conv], last_iterate[conv])  # EMA weights in place


def test_auto_precision_follows_the_hardware():
    """`auto` is float32 on every CPU (bf16 measured slower on AVX2 and on AVX-512 BF16) and
    bf16 on a GPU that runs it in its tensor cores."""
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ""
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        assert resolve_precision("auto", cuda) == ("bf16" if torch.cuda.is_bf16_supported() else "")
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("", cpu) == ""
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", cpu)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_models_defaults_build_its_recipes_net(name):
    """Each recipe owns its model: built with no arguments, it is the net the recipe trains,
    so `mnistkit models`, `mnistkit summary` and `bench infer --model` show that net."""
    rec = get_recipe(name)
    default, trained = create_model(rec.model), create_model(rec.model, **rec.model_kwargs)
    assert repr(default) == repr(trained)
    assert getattr(default, "tta", 1) == getattr(trained, "tta", 1)
    shapes = [{k: v.shape for k, v in m.state_dict().items()} for m in (default, trained)]
    assert shapes[0] == shapes[1]


@pytest.mark.parametrize("name", ["fast-cnn", "best-cnn"])
def test_tta_averages_shifted_views(name):
    """In eval mode the model's output is the mean of its logits over the image and its
    one-pixel shifts; in training mode it sees the image alone."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    plain = create_model(name, tta=1).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.rand(3, 1, 28, 28)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    views = [padded[:, :, 1 - dy : 29 - dy, 1 - dx : 29 - dx]
             for dx, dy in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))]  # fmt: skip
    expected = torch.stack([plain(v) for v in views]).mean(0)
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    torch.manual_seed(1)  # the same dropout mask for both
    trained = model.train()(x)
    torch.manual_seed(1)
    torch.testing.assert_close(trained, plain.train()(x))
