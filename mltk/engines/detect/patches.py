"""Large images as overlapping patches, and patch detections merged back.

DOTA images run to 20,000 pixels a side; detectors see them as patches of
``patch_size`` pixels that overlap by ``overlap`` (DOTA's convention: 1024
and 200). Patches start every ``patch_size - overlap`` pixels; the last one
in a row or column is moved back to end at the image border, so no patch
hangs over it and none is padded (DOTA_devkit's ``ImgSplit`` does the same;
an image smaller than a patch is one patch, the image itself).

``image_patches`` yields views into the image tensor, not copies: memory
stays that of the decoded image however many patches it has.

An object near a patch border is seen by two or more patches, whole in one
and cut in another. ``merge_patch_detections`` moves every patch's boxes to
image coordinates and runs rotated NMS per class over all of them, which
keeps the best-scored detection of each object once (the devkit's
``ResultMerge`` does this with polygon NMS at IoU 0.3, our default).

For training labels, ``inside_fraction`` gives the share of each object's
area that lies in a patch; mmrotate keeps an object in a patch when that
share is at least 0.7 (its ``iof_thr``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import torch

from mltk.core.errors import UsageError
from mltk.engines.detect.iou import polygon_area, polygon_intersection_area
from mltk.engines.detect.nms import batched_rotated_nms

DEFAULT_PATCH_SIZE = 1024
DEFAULT_OVERLAP = 200
DEFAULT_MERGE_IOU = 0.3


@dataclasses.dataclass(frozen=True)
class PatchWindow:
    """A patch's place in its image, in pixels: columns ``[left, left + width)``, rows ``[top, top + height)``."""

    left: int
    top: int
    width: int
    height: int

    def name(self, image_id: str, rate: float = 1) -> str:
        """DOTA_devkit's patch name, ``P0001__1__824___0``: image id, scale, left, top."""
        return f"{image_id}__{rate:g}__{self.left}___{self.top}"

    def polygon(self) -> torch.Tensor:
        """The window as a DOTA polygon ``(8,)``, float64."""
        right, bottom = self.left + self.width, self.top + self.height
        return torch.tensor([self.left, self.top, right, self.top, right, bottom, self.left, bottom],
                            dtype=torch.float64)


def _starts(length: int, patch_size: int, stride: int) -> list[int]:
    starts = []
    position = 0
    while position + patch_size < length:
        starts.append(position)
        position += stride
    starts.append(max(length - patch_size, 0))
    return starts


def patch_windows(height: int, width: int, *, patch_size: int = DEFAULT_PATCH_SIZE,
                  overlap: int = DEFAULT_OVERLAP) -> list[PatchWindow]:
    """The patches covering a ``height x width`` image, row by row."""
    if patch_size <= 0 or not 0 <= overlap < patch_size:
        raise UsageError(f"patch size {patch_size} and overlap {overlap}: need 0 <= overlap < patch size",
                         "DOTA's convention is a patch size of 1024 with an overlap of 200")
    if height <= 0 or width <= 0:
        raise UsageError(f"an image of {width}x{height} pixels has no patches")
    stride = patch_size - overlap
    return [PatchWindow(left, top, min(patch_size, width), min(patch_size, height))
            for top in _starts(height, patch_size, stride)
            for left in _starts(width, patch_size, stride)]


def image_patches(image: torch.Tensor, *, patch_size: int = DEFAULT_PATCH_SIZE,
                  overlap: int = DEFAULT_OVERLAP) -> Iterator[tuple[PatchWindow, torch.Tensor]]:
    """Each window of an image ``(..., H, W)`` with its view ``(..., h, w)`` (no copy)."""
    for window in patch_windows(image.shape[-2], image.shape[-1], patch_size=patch_size, overlap=overlap):
        yield window, image[..., window.top:window.top + window.height, window.left:window.left + window.width]


def boxes_to_image(boxes: torch.Tensor, window: PatchWindow) -> torch.Tensor:
    """Boxes ``(N, 5)`` in a patch's pixels -> the image's: the centres move, sizes and angles stay."""
    offset = boxes.new_tensor([window.left, window.top, 0.0, 0.0, 0.0])
    return boxes + offset


def merge_patch_detections(
    patches: Iterable[tuple[PatchWindow, torch.Tensor, torch.Tensor, torch.Tensor]],
    *,
    iou_threshold: float = DEFAULT_MERGE_IOU,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(window, boxes (N, 5), scores (N,), labels (N,))`` per patch -> the image's boxes, scores, labels.

    Boxes come back in image coordinates, highest score first, after rotated
    NMS within each class over the detections of all patches.
    """
    boxes, scores, labels = [], [], []
    for window, patch_boxes, patch_scores, patch_labels in patches:
        boxes.append(boxes_to_image(patch_boxes, window))
        scores.append(patch_scores)
        labels.append(patch_labels)
    if not boxes:
        return torch.zeros(0, 5), torch.zeros(0), torch.zeros(0, dtype=torch.long)
    boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    kept = batched_rotated_nms(boxes, scores, labels, iou_threshold)
    return boxes[kept], scores[kept], labels[kept]


def inside_fraction(polygons: torch.Tensor, window: PatchWindow) -> torch.Tensor:
    """The share ``(N,)`` of each polygon's ``(N, 8)`` area that lies inside the window (0 for zero area)."""
    if polygons.shape[0] == 0:
        return polygons.new_zeros(0)
    window_polygons = window.polygon().to(polygons).expand(polygons.shape[0], 8)
    inside = polygon_intersection_area(polygons, window_polygons)
    area = polygon_area(polygons.reshape(-1, 4, 2))
    return torch.where(area > 0, inside / area.clamp_min(torch.finfo(area.dtype).tiny), torch.zeros_like(area))
