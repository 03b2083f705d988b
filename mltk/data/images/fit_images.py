"""Fitting images to a model's input: channel count and square size.

A model pre-trained on 32x32 RGB images, carried to 28x28 grayscale digits,
needs its inputs converted: grayscale is repeated into three channels (RGB to
one channel takes the mean), and the side is resized with antialiased
bilinear interpolation. The result stays uint8, like every ``ImageDataset``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mltk.core.errors import UsageError
from mltk.data.images.dataset import ImageDataset


def fit_images(images: torch.Tensor, *, channels: int, size: int, batch: int = 4096) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, channels, size, size]; unchanged when it already fits."""
    count, have, height, width = images.shape
    if height != width:
        raise UsageError(f"images of {height}x{width} are not square; mltk fits only square images",
                         hint="crop the images to squares first")
    if have == channels and height == size:
        return images
    if have not in (1, channels) and channels != 1:
        raise UsageError(f"cannot turn {have}-channel images into {channels}-channel ones")
    out = torch.empty(count, channels, size, size, dtype=torch.uint8)
    for begin in range(0, count, batch):
        x = images[begin:begin + batch].float()
        if channels == 1 and have != 1:
            x = x.mean(dim=1, keepdim=True)
        elif have == 1 and channels != 1:
            x = x.expand(-1, channels, -1, -1)
        if height != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[begin:begin + batch] = x.round().clamp_(0, 255).to(torch.uint8)
    return out


def fit_dataset(dataset: ImageDataset, *, channels: int, size: int) -> ImageDataset:
    """``dataset`` with its images fitted; the same object when they already fit."""
    fitted = fit_images(dataset.images, channels=channels, size=size)
    if fitted is dataset.images:
        return dataset
    return ImageDataset(images=fitted, labels=dataset.labels, class_names=list(dataset.class_names),
                        name=dataset.name, split=dataset.split)
