"""Training-time augmentation: small random rotation, scale and shift (digits and parts on a line move,
they don't flip)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_ROTATION_DEG = 10.0
MAX_SCALE_CHANGE = 0.1  # +-10 %
MAX_SHIFT_PX = 2.0  # at the image's own resolution


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return augment_with(x, torch.rand(x.shape[0], 4, generator=gen, device="cpu"))


def augment_with(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """`augment_batch` with its random numbers given: u [N,4] in [0,1), one row per sample. Training
    draws one row per position of the epoch's global order, so a sample's augmentation does not depend
    on how many processes share the batch."""
    u = u.to(x.device)
    angle = (u[:, 0] - 0.5) * (2 * math.radians(MAX_ROTATION_DEG))
    scale = 1.0 + (u[:, 1] - 0.5) * (2 * MAX_SCALE_CHANGE)
    # affine_grid works in [-1, 1] coordinates: one pixel is 2 / size
    shift = (u[:, 2:] - 0.5) * (2 * MAX_SHIFT_PX / x.shape[-1]) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
