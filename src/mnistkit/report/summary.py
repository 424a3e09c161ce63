"""``mnistkit summary MODEL``: Keras's ``model.summary()`` table for a mnistkit model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mnistkit.models import count_parameters


def summary(model: nn.Module, input_shape: tuple[int, ...] = (1, 1, 28, 28)) -> str:
    """A Keras-style table: one row per layer with its output shape and parameter count.

    Shapes are PyTorch's (N, C, H, W), where Keras prints (None, H, W, C); the parameter
    counts are the same as Keras's for the same architecture. A ReLU is folded into the row
    of the layer before it, as Keras shows ``activation="relu"``.

    Args:
        model: any module; its leaf layers are listed in call order.
        input_shape: the shape of the dummy batch pushed through to record output shapes.

    Returns:
        The table as text, ending with the total, trainable and non-trainable counts.
    """
    rows: list[tuple[str, str, int]] = []
    counts: dict[str, int] = {}

    def hook(module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        kind = type(module).__name__
        if isinstance(module, nn.ReLU) and rows:  # Keras shows activation= inside its layer
            name, shape, params = rows[-1]
            rows[-1] = (name.replace(")", "+relu)"), shape, params)
            return
        counts[kind] = counts.get(kind, 0) + 1
        shape = "(None, " + ", ".join(str(d) for d in out.shape[1:]) + ")"
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append((f"{kind.lower()}_{counts[kind]} ({kind})", shape, params))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()

    total = count_parameters(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    line, thick = "_" * 65, "=" * 65
    out = [line, f"{'Layer (type)':<29}{'Output Shape':<26}{'Param #':>10}", thick]
    for i, (name, shape, params) in enumerate(rows):
        out.append(f"{name:<29}{shape:<26}{params:>10,}")
        out.append(line if i < len(rows) - 1 else thick)
    out += [
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        line,
    ]
    return "\n".join(out)
