"""Batched image augmentation on the training device.

Draws come from torch's global generator, which the training loop re-seeds at
every step, so augmentation is repeatable and survives resume.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Pad by ``padding`` (zeros) and crop back at a random offset per image.

    images: float [B, C, H, W] -> float [B, C, H, W]
    """
    if padding <= 0:
        return images
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), device=images.device)
    rows = (offsets[0][:, None] + torch.arange(height, device=images.device))[:, None, :, None]
    cols = (offsets[1][:, None] + torch.arange(width, device=images.device))[:, None, None, :]
    batch_idx = torch.arange(batch, device=images.device)[:, None, None, None]
    chan_idx = torch.arange(channels, device=images.device)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows, cols]


def random_hflip(images: torch.Tensor) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2. images: [B, C, H, W]."""
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def crop_padding(image_size: int) -> int:
    """The standard pad-and-crop margin: 4 px at 32 px, scaled with the image (at least 1)."""
    return max(1, round(image_size / 8))
