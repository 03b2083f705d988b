"""A grid of images as PNG bytes: one row per group (a class, a sample), for people to look at."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

MIN_CELL_PX = 32  # small images (8x8 digits) are enlarged, nearest-neighbour, to at least this


def grid_png(rows: list[torch.Tensor], *, pad: int = 1) -> bytes:
    """PNG of ``rows``: each a float tensor [n_i, C, H, W] with values in [0, 1] (clipped), C = 1 or 3.

    Row i shows its n_i images left to right; shorter rows leave blank cells.
    Padding between cells is white.
    """
    if not rows or all(len(r) == 0 for r in rows):
        raise ValueError("grid_png: nothing to draw")
    channels, height, width = next(r for r in rows if len(r)).shape[1:]
    scale = max(1, math.ceil(MIN_CELL_PX / max(height, width)))
    cell_h, cell_w = height * scale, width * scale
    columns = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (cell_h + pad) + pad, columns * (cell_w + pad) + pad, channels), 255,
                     dtype=np.uint8)
    for i, row in enumerate(rows):
        pixels = (row.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        pixels = pixels.repeat(scale, axis=2).repeat(scale, axis=3).transpose(0, 2, 3, 1)  # [n, h, w, C]
        for j, image in enumerate(pixels):
            top, left = pad + i * (cell_h + pad), pad + j * (cell_w + pad)
            canvas[top:top + cell_h, left:left + cell_w] = image
    buffer = io.BytesIO()  # uint8 [h, w] is written as grayscale, [h, w, 3] as RGB
    Image.fromarray(canvas[..., 0] if channels == 1 else canvas).save(buffer, format="PNG")
    return buffer.getvalue()
