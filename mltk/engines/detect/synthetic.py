"""Synthetic DOTA folders: rotated rectangles on a noisy ground, written in DOTA's file layout.

For tests and smoke runs that must not depend on the shared data: each
image holds small bright ``small-vehicle`` rectangles and long dark
``large-vehicle`` ones at random angles, and its ``labelTxt`` file lists
them as DOTA polygons. The same seed writes the same files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from mltk.core.paths import data_root
from mltk.engines.detect.boxes import box_to_polygon, normalize_le90
from mltk.engines.detect.dota import DotaLabels, write_label_file

# (class, long side, short side, fill colour) of each kind of object.
KINDS = (("small-vehicle", 14.0, 7.0, (235, 235, 220)), ("large-vehicle", 28.0, 9.0, (40, 40, 60)))


def write_synthetic_dota(folder: str | Path | None = None, *, images: int = 2, size: int = 128,
                         objects: int = 6, seed: int = 0) -> Path:
    """Write ``images`` PNGs of ``size`` pixels with ``objects`` rectangles each, and their labels; the folder.

    Without ``folder`` the files go to ``$MLTK_DATA/synthetic-dota-<seed>``
    (written once: an existing folder is reused).
    """
    root = Path(folder) if folder is not None else data_root() / f"synthetic-dota-{seed}"
    if folder is None and (root / "labelTxt").is_dir():
        return root
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for index in range(images):
        ground = rng.normal(110, 12, size=(size, size, 3)).clip(0, 255).astype(np.uint8)
        picture = Image.fromarray(ground, "RGB")
        pen = ImageDraw.Draw(picture)
        polygons, labels = [], []
        for _ in range(objects):
            kind = int(rng.integers(len(KINDS)))
            _, long_side, short_side, colour = KINDS[kind]
            margin = long_side / 2 + 2
            box = torch.tensor([[rng.uniform(margin, size - margin), rng.uniform(margin, size - margin),
                                 long_side, short_side, rng.uniform(-math.pi / 2, math.pi / 2)]], dtype=torch.float64)
            polygon = box_to_polygon(normalize_le90(box))[0]
            pen.polygon([tuple(point) for point in polygon.view(4, 2).tolist()], fill=colour)
            polygons.append(polygon)
            labels.append(kind)
        image_id = f"S{index:04d}"
        picture.save(root / "images" / f"{image_id}.png")
        write_label_file(root / "labelTxt" / f"{image_id}.txt", DotaLabels(
            torch.stack(polygons), torch.tensor(labels), torch.zeros(len(labels), dtype=torch.long),
            classes=tuple(name for name, *_ in KINDS)))
    return root
