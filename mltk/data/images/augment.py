"""Batched image augmentation on the training device.

The random draws of a step are made for the whole global batch from a
generator seeded by (run seed, step), and each rank applies its own slice of
them: N data-parallel ranks then augment every image exactly as one process
would, and a resumed run draws what the uninterrupted run drew.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_padding(image_size: int) -> int:
    """The standard pad-and-crop margin: 4 px at 32 px, scaled with the image (at least 1)."""
    return max(1, round(image_size / 8))


def crop_flip(images: torch.Tensor, *, padding: int, flip: bool, generator: torch.Generator,
              global_batch: int, start: int = 0) -> torch.Tensor:
    """Random pad-and-crop (and left-right flip with probability 1/2) of ``images``.

    images: float [B, C, H, W], rows ``start .. start+B`` of a global batch of
    ``global_batch`` images -> float [B, C, H, W].
    """
    offsets = torch.randint(0, 2 * padding + 1, (global_batch, 2), generator=generator)
    flips = torch.rand(global_batch, generator=generator) < 0.5
    rows = slice(start, start + images.shape[0])
    out = shift_crop(images, offsets[rows].to(images.device), padding)
    if flip:
        out = torch.where(flips[rows].to(images.device)[:, None, None, None], out.flip(-1), out)
    return out


def shift_crop(images: torch.Tensor, offsets: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop each image at its (row, col) offset.

    images: [B, C, H, W]; offsets: int [B, 2] in [0, 2 * padding] -> [B, C, H, W]
    """
    if padding <= 0:
        return images
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    device = images.device
    rows = (offsets[:, 0:1] + torch.arange(height, device=device))[:, None, :, None]
    cols = (offsets[:, 1:2] + torch.arange(width, device=device))[:, None, None, :]
    batch_idx = torch.arange(batch, device=device)[:, None, None, None]
    chan_idx = torch.arange(channels, device=device)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows, cols]
