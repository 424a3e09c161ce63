"""Data augmentation on whole batches of tensors: random affine and elastic distortions.

Each batch is warped by one ``grid_sample`` call on the device that holds it, so
augmentation adds no DataLoader and no Python loop over images. The distortions are those
that made MNIST's best results (Simard et al. 2003, "Best practices for convolutional neural
networks applied to visual document analysis": affine and elastic; Ciresan et al. 2010/2012):
small rotations, scalings, shears and translations, and a smooth random displacement field.

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
    elastic_alpha: float = 0.0  # elastic displacement magnitude in pixels (0: off)
    elastic_sigma: float = 4.0  # smoothness of the displacement field, pixels (Gaussian std)
    p: float = 1.0  # fraction of images distorted; the rest pass unchanged

    @property
    def active(self) -> bool:
        return any((self.degrees, self.scale, self.shear, self.translate, self.elastic_alpha))


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


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(round(2 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    return k / k.sum()


def elastic_field(n: int, alpha: float, sigma: float, gen: torch.Generator | None) -> torch.Tensor:
    """A smooth random displacement (N, 28, 28, 2) in normalised units: uniform noise in
    [-1, 1] per pixel, blurred by a Gaussian of ``sigma`` pixels, scaled to ``alpha`` pixels."""
    noise = torch.rand(n, 2, 28, 28, generator=gen) * 2 - 1  # (N, 2, H, W)
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    flat = noise.view(n * 2, 1, 28, 28)
    flat = F.conv2d(F.pad(flat, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    field = flat.view(n, 2, 28, 28)
    # Normalise so the field's RMS is 1 before scaling: blur shrinks it by a sigma-dependent factor.
    field = field / field.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-6)
    return (field * alpha * 2 / 28).permute(0, 2, 3, 1)


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
    if cfg.elastic_alpha:
        grid = grid + elastic_field(n, cfg.elastic_alpha, cfg.elastic_sigma, gen)
    if cfg.p < 1.0:  # identity for a random (1 - p) of the images
        keep = torch.rand(n, generator=gen) >= cfg.p
        ident = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), [n, 1, 28, 28], align_corners=False)
        grid = torch.where(keep.view(n, 1, 1, 1), ident, grid)
    out = F.grid_sample(x.float(), grid.to(x.device), mode="bilinear", padding_mode="zeros",
                        align_corners=False)  # fmt: skip
    return out.to(x.dtype)
