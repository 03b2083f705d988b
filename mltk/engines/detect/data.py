"""Training and validation data from a ``dota:PATH`` folder: regions of images, cut into labelled patches.

A *region* is a labelled image or a part of one (a view, not a copy). The
held-out split is by image when the folder holds at least two labelled
images (the last ``val_fraction`` of them by name), else by region of the
one image: its right-hand ``val_fraction`` of columns, or with
``val_side="bottom"`` its bottom ``val_fraction`` of rows (choose the side
whose strip holds classes the rest also holds: P1888's right quarter holds
all of its small vehicles and nothing else). An object belongs to
a region, and to a training patch, when at least ``min_inside`` of its area
lies inside (mmrotate's 0.7); in a validation region an object cut by the
border below that share is kept as *difficult* (2, as DOTA_devkit's splitter
marks it), so detecting half of it is neither right nor wrong.

Training patches follow DOTA's 1024 / 200 split (``patches.patch_windows``)
inside each training region; patches without objects are skipped unless
``keep_empty``. Their boxes are le90, in the patch's pixels.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mltk.core.errors import ArtifactError, DataMissingError
from mltk.core.paths import data_root
from mltk.engines.detect.boxes import polygon_to_box
from mltk.engines.detect.dota import (
    DOTA_V1_0_CLASSES,
    DOTA_V1_5_CLASSES,
    DotaLabels,
    list_dota_folder,
    read_label_file,
)
from mltk.engines.detect.patches import PatchWindow, inside_fraction, patch_windows

CLASS_LISTS = {"dota-v1.0": DOTA_V1_0_CLASSES, "dota-v1.5": DOTA_V1_5_CLASSES}
CUT_DIFFICULT = 2  # DOTA_devkit's flag for an object a border cuts


def decode_image(path) -> torch.Tensor:
    """An image file -> uint8 ``(3, H, W)``; an ArtifactError naming the file when it cannot be decoded.

    PIL's decompression-bomb limit (89 megapixels) is lifted for this call:
    DOTA images reach 20,000 pixels a side.
    """
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as image:
            # One copy out of PIL (np.array), shared with torch (from_numpy): the peak is twice the image.
            pixels = torch.from_numpy(np.array(image if image.mode == "RGB" else image.convert("RGB")))
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ArtifactError(f"{path}: cannot decode the image ({error})",
                            hint="give PNG, JPEG, TIFF or BMP files") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return pixels.permute(2, 0, 1)


@dataclasses.dataclass(frozen=True)
class Region:
    """A labelled image or part of one; ``labels`` are in the region's pixels."""

    region_id: str
    image: torch.Tensor  # uint8 (3, h, w), a view into the decoded image
    labels: DotaLabels


@dataclasses.dataclass(frozen=True)
class TrainingPatch:
    region: int  # index into the training regions
    window: PatchWindow
    boxes: torch.Tensor  # (N, 5) le90 in the patch's pixels, float32
    labels: torch.Tensor  # (N,) int64


def labels_in_window(labels: DotaLabels, window: PatchWindow, min_inside: float, *,
                     keep_cut_as_difficult: bool) -> DotaLabels:
    """The objects of ``window``, moved into its pixels; those cut below ``min_inside`` dropped or made difficult."""
    share = inside_fraction(labels.polygons, window)
    inside = share >= min_inside
    keep = inside | (share > 0) if keep_cut_as_difficult else inside
    offset = labels.polygons.new_tensor([window.left, window.top] * 4)
    difficult = torch.where(inside, labels.difficult, torch.full_like(labels.difficult, CUT_DIFFICULT))
    return DotaLabels(labels.polygons[keep] - offset, labels.labels[keep], difficult[keep], labels.classes,
                      dict(labels.header))


def _region(region_id: str, image: torch.Tensor, labels: DotaLabels, window: PatchWindow, min_inside: float,
            held_out: bool) -> Region:
    view = image[:, window.top:window.top + window.height, window.left:window.left + window.width]
    return Region(region_id, view, labels_in_window(labels, window, min_inside, keep_cut_as_difficult=held_out))


def resolve_dota_folder(name: str) -> Path:
    """The folder of ``dota:PATH``: PATH as given when it exists, else under ``$MLTK_DATA`` (the shared data)."""
    path = Path(name.removeprefix("dota:")).expanduser()
    if path.is_absolute() or path.exists():
        return path
    under_data = data_root() / path
    return under_data if under_data.exists() else path


VAL_SIDES = ("right", "bottom")


def split_regions(folder: str | Path, *, classes: str, val_fraction: float,
                  min_inside: float, val_side: str = "right") -> tuple[list[Region], list[Region]]:
    """(training regions, validation regions) of a ``dota:PATH`` folder."""
    class_list = CLASS_LISTS[classes]
    items = [item for item in list_dota_folder(folder) if item.image_path and item.label_path]
    if not items:
        raise DataMissingError(f"{folder}: no image has a label file",
                               hint="put images in PATH/images/ and their labels in PATH/labelTxt/<image>.txt")
    loaded = [(item.image_id, decode_image(item.image_path), read_label_file(item.label_path, class_list))
              for item in items]
    if len(loaded) >= 2:
        held = math.ceil(len(loaded) * val_fraction) if val_fraction > 0 else 0
        held = min(held, len(loaded) - 1)
        regions = [Region(image_id, image, labels) for image_id, image, labels in loaded]
        return regions[:len(regions) - held], regions[len(regions) - held:]
    image_id, image, labels = loaded[0]
    height, width = image.shape[1:]
    if val_side not in VAL_SIDES:
        raise ValueError(f"val_side {val_side!r} is not one of {VAL_SIDES}")
    held = int(round((width if val_side == "right" else height) * val_fraction))
    if held == 0:
        return [Region(image_id, image, labels)], []
    if val_side == "right":
        train_window = PatchWindow(0, 0, width - held, height)
        val_window = PatchWindow(width - held, 0, held, height)
    else:
        train_window = PatchWindow(0, 0, width, height - held)
        val_window = PatchWindow(0, height - held, width, held)
    return ([_region(f"{image_id}__train", image, labels, train_window, min_inside, held_out=False)],
            [_region(f"{image_id}__val", image, labels, val_window, min_inside, held_out=True)])


def training_patches(regions: list[Region], *, patch_size: int, overlap: int, min_inside: float,
                     keep_empty: bool) -> list[TrainingPatch]:
    """Every training patch of the regions, with its objects as le90 boxes."""
    patches = []
    for index, region in enumerate(regions):
        for window in patch_windows(region.image.shape[1], region.image.shape[2], patch_size=patch_size,
                                    overlap=overlap):
            inside = labels_in_window(region.labels, window, min_inside, keep_cut_as_difficult=False)
            if len(inside) == 0 and not keep_empty:
                continue
            boxes = polygon_to_box(inside.polygons).float() if len(inside) else torch.zeros(0, 5)
            patches.append(TrainingPatch(index, window, boxes, inside.labels))
    if not patches:
        raise DataMissingError("no training patch holds an object",
                               hint="check the label files, or set data.keep_empty=true")
    return patches
