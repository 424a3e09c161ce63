"""The model zoo: every architecture of the seed tutorials, in a registry as timm keeps one.

Contract (other modules rely on it): a model takes float32 images (N, 1, 28, 28) in [0, 1],
ink high as MNIST stores it, and returns logits (N, 10). Anything model-specific that the
seed did to its input (flattening, seed 001's unscaled 0..255 pixels) happens *inside* the
model, so predict/serve/ONNX feed every model the same [0, 1] images. Softmax is not part of
the model: the loss applies it (see ``train.py``), which is the Keras softmax + categorical
cross-entropy pair computed stably.

Weights start as Keras 2 initialises them (Glorot-uniform kernels, zero biases), so a seed
recipe trains from the same distribution the seed did. Only plain ``nn`` layers are used, so
every model exports to ONNX.

Add a model with a small decorated function::

    @register_model
    def tiny_mlp() -> Net:
        return Net([nn.Flatten(), nn.Linear(784, 10)])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnistkit.errors import MnistkitError

MODELS: dict[str, Callable[..., Net]] = {}


def register_model(fn: Callable[..., Net]) -> Callable[..., Net]:
    """Register a model constructor under its function name, ``_`` spelled ``-``."""
    MODELS[fn.__name__.replace("_", "-")] = fn
    return fn


class Net(nn.Sequential):
    """A stack of layers, Keras ``Sequential`` style, with Keras 2's initialisation.

    Args:
        layers: the layers in order.
        l1_weights: names of the parameters a recipe's L1 penalty applies to (the kernels
            that had a ``kernel_regularizer`` in the seed); ``None`` means every kernel.

    Attributes:
        members: how many nets' logits the output stacks in training mode, ``(members * N,
            10)``: 1, or the size of a :class:`Members` layer. ``train_step`` scores each.
    """

    def __init__(self, layers: list[nn.Module], l1_weights: list[str] | None = None):
        super().__init__(*layers)
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                # Keras 2 defaults: glorot_uniform kernels (fan_in/fan_out as torch computes
                # them for (out, in, kh, kw), which matches Keras's kh*kw*in / kh*kw*out), and
                # zero biases. PyTorch's own default is Kaiming-uniform with uniform biases.
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.l1_weights = l1_weights or [n for n, p in self.named_parameters() if p.dim() > 1]
        self.members = next((len(m) for m in layers if isinstance(m, Members)), 1)


class Scale(nn.Module):
    """Multiply the input by a constant: seed 001's MLP saw raw 0..255 pixels."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def create_model(name: str, **kwargs: Any) -> Net:
    """Build a registered model.

    Args:
        name: a key of :data:`MODELS`, e.g. ``"convnet"``.
        **kwargs: passed to the model's constructor.

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        MnistkitError: the name is unknown (the message lists the valid ones) or the
            arguments do not fit the constructor.
    """
    if name not in MODELS:
        raise MnistkitError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}.")
    try:
        return MODELS[name](**kwargs)
    except (TypeError, ValueError, RuntimeError) as e:  # RuntimeError: torch's, on a bad size
        raise MnistkitError(
            f"model {name!r} cannot be built with the arguments {kwargs}: {e}"
        ) from e


# What these constructors built for an argument left out before their defaults became the
# ``fast`` and ``best`` recipes' nets: runs of that time that left one out of config.json
# meant these (rundir.load_model fills them in).
FORMER_DEFAULTS: dict[str, dict[str, Any]] = {
    "fast-cnn": {"widths": (16, 32, 64), "stem": "pool", "stem_kernel": 3},
    "best-cnn": {"members": 1, "depth": 1},
}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- the seed architectures ------------------------------------------------------------


@register_model
def dense512(hidden: int = 512) -> Net:
    """Seeds 000 and 002: Dense(512, relu) -> Dense(10, softmax) on pixels / 255. 407,050 params."""
    return Net([nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10)])


@register_model
def mlp_l1(dropout: float = 0.01, scale: float = 255.0) -> Net:
    """Seed 001: Dense 128 -> 32 -> 10 with dropout 0.01, L1 on the two hidden kernels.

    Seed 001 fed ``astype('float')`` pixels without dividing by 255, so ``scale=255`` turns
    our [0, 1] input back into what it saw. 104,938 params.
    """
    layers: list[nn.Module] = [
        Scale(scale),
        nn.Flatten(),
        nn.Linear(784, 128),  # index 2
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(128, 32),  # index 5
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(32, 10),
    ]
    # kernel_regularizer=l1(1e-4) sat on the first two Dense layers only, not the output one.
    return Net(layers, l1_weights=["2.weight", "5.weight"])


@register_model
def lenet() -> Net:
    """Seed 001's LeNet: 3x3 'valid' convs 6-16-120, 2x2 average pooling, Dense 84. 109,994 params."""
    return Net(
        [
            nn.Conv2d(1, 6, 3), nn.ReLU(), nn.AvgPool2d(2),     # (N, 6, 13, 13)
            nn.Conv2d(6, 16, 3), nn.ReLU(), nn.AvgPool2d(2),    # (N, 16, 5, 5)
            nn.Conv2d(16, 120, 3), nn.ReLU(),                   # (N, 120, 3, 3)
            nn.Flatten(),                                       # (N, 1080)
            nn.Linear(1080, 84), nn.ReLU(),
            nn.Linear(84, 10),
        ]
    )  # fmt: skip


@register_model
def convnet() -> Net:
    """Seed 003 (Deep Learning with Python, 2nd ed.): convs 32-64-128, max pooling. 104,202 params."""
    return Net(
        [
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),    # (N, 32, 13, 13)
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),   # (N, 64, 5, 5)
            nn.Conv2d(64, 128, 3), nn.ReLU(),                   # (N, 128, 3, 3)
            nn.Flatten(),                                       # (N, 1152)
            nn.Linear(1152, 10),
        ]
    )  # fmt: skip


@register_model
def deep_convnet(dropout: float = 0.5) -> Net:
    """Seed 004: 'same' convs 64-128-256, each max-pooled then dropout 0.5; Dense 128-64-32.

    Keras's 'valid' pooling floors 7 -> 3, so the flattened size is 256 * 3 * 3 = 2304.
    675,370 params (seed 004's summary: 640, 73,856, 295,168 for the convolutions).
    """
    return Net(
        [
            nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(dropout),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(dropout),
            nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(dropout),
            nn.Flatten(),                                       # (N, 2304)
            nn.Linear(2304, 128), nn.ReLU(),
            nn.Linear(128, 64), nn.ReLU(),
            nn.Linear(64, 32), nn.ReLU(),
            nn.Linear(32, 10),
        ]
    )  # fmt: skip


# --- ours: the fast and best recipes ---------------------------------------------------

# Test-time augmentation: the image and its copies shifted by one pixel right, left, down, up.
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))  # (dx, dy) in pixels


class TTANet(Net):
    """A :class:`Net` that, in eval mode, averages its logits over ``tta`` one-pixel shifts
    of the input (``TTA_SHIFTS[:tta]``; 1 = no TTA). Training sees plain images.

    The shifts are a pad and slices inside ``forward``, so TTA holds wherever the model runs:
    ``evaluate``, ``predict``, ``serve`` and the ONNX graph alike. It costs ``tta`` forward
    passes per image at inference, nothing in training.
    """

    def __init__(self, layers: list[nn.Module], tta: int = 1):
        super().__init__(layers)
        if not 1 <= tta <= len(TTA_SHIFTS):
            raise ValueError(f"tta must lie in 1..{len(TTA_SHIFTS)}, not {tta}")
        self.tta = tta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.tta == 1:
            return super().forward(x)
        padded = F.pad(x, (1, 1, 1, 1))  # (N, 1, 30, 30), zero border = MNIST background
        views = [
            padded[:, :, 1 - dy : 29 - dy, 1 - dx : 29 - dx] for dx, dy in TTA_SHIFTS[: self.tta]
        ]
        logits = super().forward(torch.cat(views))  # (tta * N, 10)
        return logits.reshape(self.tta, -1, logits.shape[-1]).mean(0)  # (N, 10)


def conv_pool_bn(c_in: int, c_out: int, k: int = 3) -> list[nn.Module]:
    """Conv ('same', no bias: batch norm's shift replaces it) -> 2x2 max pool -> BN -> ReLU.

    Pooling before batch norm and ReLU computes what the usual conv-BN-ReLU-pool does
    wherever BN's scale is positive (a per-channel increasing affine map, and ReLU, commute
    with max), while BN and ReLU touch a quarter of the values. On the 2-core AVX2 CPU that
    made a training step of ``fast-cnn`` 1.5x and of ``best-cnn`` 1.6x faster (``benchmarks/explore_fast.py --order``).
    """
    return [
        nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


def conv_bn_relu(ch: int) -> list[nn.Module]:
    """Conv 3x3 ('same', no bias) -> BN -> ReLU, keeping size and channels."""
    return [nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]


def strided_stem(c_out: int, k: int = 3) -> list[nn.Module]:
    """Conv k x k with stride 2 (28 -> 14) -> BN -> ReLU: the first block of
    :func:`conv_pool_bn` without its full-size convolution and max pool.

    ``k=3`` sees each output's 3x3 window, half the pixels of the 4x4 window that a 3x3
    convolution and a 2x2 pool cover; ``k=4`` covers that window, 5 and 6 more.
    """
    if not 2 <= k <= 7:
        raise MnistkitError(f"a strided stem's kernel is 2 to 7 pixels wide, not {k}.")
    return [
        nn.Conv2d(1, c_out, k, stride=2, padding=(k - 1) // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


@register_model
def fast_cnn(
    widths: tuple[int, int, int] = (8, 16, 32), tta: int = 5, stem: str = "stride",
    stem_kernel: int = 5,
) -> Net:  # fmt: skip
    """The ``fast`` recipe's net: a 5x5 stride-2 conv, two conv-pool-BN-ReLU blocks, one Linear.

    Sized for a small CPU: about 0.49 M multiply-adds per image forward (14x14x8x25 +
    14x14x16x8x9 + 7x7x32x16x9 + 288x10), so one epoch is a few seconds of compute. Batch
    norm makes one epoch at a high learning rate stable, which is what reaches 99 % so soon;
    it also makes input normalisation unnecessary. 8,962 parameters. ``stem="pool"`` makes
    the first block a full-size conv-pool-BN-ReLU like the others (:func:`conv_pool_bn`).
    """
    return pooled_cnn(widths, dropout=0.0, tta=tta, stem=stem, stem_kernel=stem_kernel)


@register_model
def best_cnn(
    widths: tuple[int, int, int] = (32, 64, 128), dropout: float = 0.25, tta: int = 5,
    members: int = 2, depth: int = 2,
) -> Net:  # fmt: skip
    """The ``best`` recipe's net: a committee of two deep conv-pool-BN-ReLU nets, with dropout.

    Each member: three conv-pool-BN-ReLU blocks at widths 32-64-128 (7.5 M multiply-adds per
    image: 28x28x32x9 + 14x14x64x32x9 + 7x7x128x64x9), each followed by ``depth - 1`` more
    same-size 3x3 conv-BN-ReLU layers (+ 14x14x32x32x9 + 7x7x64x64x9 + 3x3x128x128x9 at depth
    2: 12.4 M), dropout and one Linear; 298,410 parameters at depth 2 (104,426 at depth 1).
    ``members`` of them side by side (:class:`Members`), each trained on its own loss, their
    logits averaged at inference: 596,820 parameters and 24.8 M multiply-adds for two.
    """
    return pooled_cnn(widths, dropout=dropout, tta=tta, members=members, depth=depth)


class Members(nn.ModuleList):
    """Independent nets side by side: an ensemble that trains and ships as one model.

    In training mode the output stacks every member's logits, ``(members * N, 10)``, so the
    loss (``training.step.train_step`` repeats the labels ``Net.members`` times to match) is
    the mean of the members' own losses: no gradient crosses from one member to another and
    each learns as if alone, from its own initial weights. In eval mode the output is the
    mean of the members' logits, ``(N, 10)``: what ``evaluate``, ``predict``, ``serve`` and
    ONNX see.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = [member(x) for member in self]
        return torch.cat(logits) if self.training else torch.stack(logits).mean(0)


def pooled_cnn(
    widths: tuple[int, int, int], dropout: float, tta: int, members: int = 1, stem: str = "pool",
    stem_kernel: int = 3, depth: int = 1,
) -> Net:  # fmt: skip
    """Three conv-pool-BN-ReLU blocks (28 -> 14 -> 7 -> 3), then optional dropout and one
    Linear: the shape of ``fast-cnn`` and ``best-cnn``; ``members`` of them side by side.
    ``depth > 1`` follows each block with ``depth - 1`` more 3x3 conv-BN-ReLU layers at the
    block's output size (1.8 M, 1.8 M and 1.3 M multiply-adds at widths 32-64-128: about half
    of the second and third blocks' own convolutions, 8x the first's)."""
    if members < 1:
        raise MnistkitError(f"an ensemble needs at least one member, not {members}.")
    if depth < 1:
        raise MnistkitError(f"each block has at least one convolution, not depth {depth}.")
    if stem not in ("pool", "stride"):
        raise MnistkitError(f"stem is 'pool' or 'stride', not {stem!r}.")
    a, b, c = widths
    head: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []

    def more(ch: int) -> list[nn.Module]:
        return [layer for _ in range(depth - 1) for layer in conv_bn_relu(ch)]

    def stack() -> list[nn.Module]:
        first = conv_pool_bn(1, a) if stem == "pool" else strided_stem(a, stem_kernel)
        return [
            *first, *more(a),                                   # (N, a, 14, 14)
            *conv_pool_bn(a, b), *more(b),                      # (N, b, 7, 7)
            *conv_pool_bn(b, c), *more(c),                      # (N, c, 3, 3)
            nn.Flatten(),                                       # (N, 9c)
            *head,
            nn.Linear(9 * c, 10),
        ]  # fmt: skip

    if members == 1:  # the layers at the top level: the weight names of every earlier run
        return TTANet(stack(), tta=tta)
    return TTANet([Members(nn.Sequential(*stack()) for _ in range(members))], tta=tta)
