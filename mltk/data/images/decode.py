"""Decoding many small encoded images (PNG, JPEG, ...) into one uint8 array.

All images must share one size: mltk never resizes silently, because a
resize changes what a model sees and hides a wrong folder. Decoding is plain
serial PIL: for 32x32 JPEGs PIL's per-image Python work dominates and holds
the GIL, so threads measured slower, not faster (50,000 take 8-10 s on 2 cores).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mltk.core.errors import ArtifactError

_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
# Classification datasets hold small images; a side beyond this is a wrong file, and N of them would
# not fit in memory. The size is read from the header, before anything is decoded.
MAX_SIDE = 4096


def decode_images(
    names: list[str],
    read: Callable[[str], bytes],
    where: Callable[[str], str],
    *,
    force_rgb: bool = False,
) -> torch.Tensor:
    """Decode ``read(name)`` for each name -> uint8 [N, C, H, W].

    C is 1 when every image is grayscale (and ``force_rgb`` is False), else 3
    with grayscale images repeated over the three channels. ``where(name)``
    names a file in error messages.
    """
    if not names:
        raise ValueError("decode_images needs at least one image")
    pixels: np.ndarray | None = None
    is_gray = np.zeros(len(names), dtype=bool)
    for index, name in enumerate(names):
        try:
            with Image.open(io.BytesIO(read(name))) as image:
                if max(image.size) > MAX_SIDE:
                    raise ArtifactError(
                        f"{where(name)} is {image.size[0]}x{image.size[1]}, larger than {MAX_SIDE} pixels a side",
                        "resize the images before loading (mltk does not resize)",
                    )
                if pixels is None:
                    first, size = name, image.size
                elif image.size != size:
                    raise ArtifactError(
                        f"{where(name)} is {image.size[0]}x{image.size[1]} but {where(first)} "
                        f"is {size[0]}x{size[1]}; all images must have one size",
                        "resize the images to one size before loading (mltk does not resize)",
                    )
                gray = image.mode in _GRAY_MODES
                image = image.convert("L" if gray else "RGB")
                if pixels is None:
                    pixels = np.empty((len(names), size[1], size[0], 3), dtype=np.uint8)
                if gray:
                    pixels[index, :, :, 0] = np.asarray(image)
                else:
                    pixels[index] = np.asarray(image)
                is_gray[index] = gray
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
            raise ArtifactError(
                f"{where(name)}: cannot decode the image ({error})", "the file is corrupt"
            ) from error
    assert pixels is not None
    if is_gray.all() and not force_rgb:
        return torch.from_numpy(np.ascontiguousarray(pixels[:, :, :, 0])).unsqueeze(1)
    pixels[is_gray, :, :, 1:] = pixels[is_gray, :, :, :1]
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
