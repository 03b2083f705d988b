"""Random resized crops (Inception / MAE pre-training style), batched on the device.

Each image gets a box covering a random fraction of its area (uniform in
``scale``) with a random aspect ratio (log-uniform in ``ratio``), optionally
mirrored, resampled back to the full size with bilinear interpolation. Like
``crop_flip``, the draws are made for the whole global batch from a seeded
generator and each rank applies its own rows, so N data-parallel ranks augment
exactly as one process does and a resumed run redraws the same boxes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ATTEMPTS = 10  # boxes tried per image before falling back to the whole image (as torchvision)


def resized_crop_boxes(count: int, *, scale: tuple[float, float], ratio: tuple[float, float],
                       generator: torch.Generator) -> torch.Tensor:
    """Boxes as fractions of the image: float [count, 4] = (centre x, centre y, width, height), all in (0, 1]."""
    area = torch.empty(count, ATTEMPTS).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(count, ATTEMPTS).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = log_ratio.exp()
    width = (area * aspect).sqrt()
    height = (area / aspect).sqrt()
    fits = (width <= 1) & (height <= 1)
    first = torch.where(fits.any(dim=1), fits.float().argmax(dim=1), torch.full((count,), -1))
    rows = torch.arange(count)
    w = torch.where(first >= 0, width[rows, first.clamp_min(0)], torch.ones(count))
    h = torch.where(first >= 0, height[rows, first.clamp_min(0)], torch.ones(count))
    corner = torch.rand(count, 2, generator=generator)
    cx = corner[:, 0] * (1 - w) + w / 2
    cy = corner[:, 1] * (1 - h) + h / 2
    return torch.stack([cx, cy, w, h], dim=1)


def random_resized_crop(images: torch.Tensor, *, scale: tuple[float, float] = (0.2, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool, generator: torch.Generator,
                        global_batch: int, start: int = 0) -> torch.Tensor:
    """Random resized crops (and left-right flips with probability 1/2) of ``images``.

    images: float [B, C, H, W], rows ``start .. start+B`` of a global batch of
    ``global_batch`` images -> float [B, C, H, W].
    """
    boxes = resized_crop_boxes(global_batch, scale=scale, ratio=ratio, generator=generator)
    flips = torch.rand(global_batch, generator=generator) < 0.5
    rows = slice(start, start + images.shape[0])
    cx, cy, w, h = boxes[rows].to(images.device).unbind(dim=1)
    sign = torch.ones_like(w)
    if flip:
        sign = torch.where(flips[rows].to(images.device), -1.0, 1.0)
    # affine_grid maps output coordinates in [-1, 1] to input coordinates in [-1, 1].
    theta = torch.zeros(images.shape[0], 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = 2 * cx - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * cy - 1
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
