"""Data augmentation on whole batches of tensors: random affine distortions.

Each batch is warped by one ``grid_sample`` call on the device that holds it, so
augmentation adds no DataLoader and no Python loop over images. The distortions are the
affine half of those behind MNIST's best results (Simard et al. 2003, "Best practices for
convolutional neural networks applied to visual document analysis"; Ciresan et al.
2010/2012): small rotations, scalings, shears and translations.

The random numbers come from the generator the caller passes (the run's shuffling RNG), so a
seed fixes the augmentation too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """How strongly to distort. Zero everywhere means no augmentation."""

    degrees: float = 0.0  # rotation, uniform in +-degrees
    scale: float = 0.0  # zoom, uniform in 1 +- scale
    shear: float = 0.0  # shear angle, uniform in +-shear degrees
    translate: float = 0.0  # shift, uniform in +-translate pixels (of 28)

    @property
    def active(self) -> bool:
        return any((self.degrees, self.scale, self.shear, self.translate))


def _uniform(n: int, half_width: float, gen: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(n, generator=gen) * 2 - 1) * half_width


def affine_matrices(n: int, cfg: AugmentConfig, gen: torch.Generator | None) -> torch.Tensor:
    """Random 2x3 matrices (N, 2, 3) in ``affine_grid``'s normalised [-1, 1] coordinates."""
    rot = _uniform(n, math.radians(cfg.degrees), gen)
    zoom = 1 + _uniform(n, cfg.scale, gen)
    shear = _uniform(n, math.radians(cfg.shear), gen)
    shift = _uniform(2 * n, cfg.translate * 2 / 28, gen).view(n, 2)  # pixels -> [-1, 1] units
    cos, sin = torch.cos(rot), torch.sin(rot)
    # Output pixel p samples the input at A p + t: a rotation times a shear, over a zoom.
    a = torch.stack([cos, -sin + cos * torch.tan(shear), sin, cos + sin * torch.tan(shear)], 1)
    a = a.view(n, 2, 2) / zoom.view(n, 1, 1)
    return torch.cat([a, shift.view(n, 2, 1)], 2)


def augment(
    x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Distort a batch of images.

    Args:
        x: images (N, 1, 28, 28) float in [0, 1], on any device.
        cfg: the distortion ranges.
        gen: a CPU generator for the random parameters (drawn on the CPU, so the same seed
            gives the same distortions on any device).

    Returns:
        The distorted batch, same shape, dtype and device; background stays 0.
    """
    if not cfg.active:
        return x
    n = x.shape[0]
    theta = affine_matrices(n, cfg, gen)
    grid = F.affine_grid(theta, [n, 1, 28, 28], align_corners=False)  # (N, H, W, 2)
    out = F.grid_sample(x.float(), grid.to(x.device), mode="bilinear", padding_mode="zeros",
                        align_corners=False)  # fmt: skip
    return out.to(x.dtype)
