"""Detecting objects in an image of any size: patch by patch, merged back with rotated NMS.

Each patch (``patches.image_patches``: views, not copies) is converted to
float, padded on the right and bottom to a multiple of 32 and run through
the detector alone, so memory stays that of the decoded image plus one
patch however large the image. Detections whose centre falls in the padding
are dropped; the rest move to image coordinates and are merged per class
with rotated NMS (DOTA_devkit's IoU 0.3).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from mltk.engines.detect.model import SIZE_MULTIPLE, OrientedDetector
from mltk.engines.detect.patches import DEFAULT_MERGE_IOU, image_patches, merge_patch_detections


@dataclasses.dataclass
class ImageDetections:
    """An image's detections, best first, in its pixels; ``rois`` and ``refined`` count the RoIs of all patches."""

    boxes: torch.Tensor  # (N, 5) le90
    scores: torch.Tensor  # (N,)
    labels: torch.Tensor  # (N,)
    patches: int
    rois: int
    refined: int

    def __len__(self) -> int:
        return self.boxes.shape[0]

    @property
    def refined_fraction(self) -> float | None:
        return self.refined / self.rois if self.rois else None


def pad_to_multiple(images: torch.Tensor, multiple: int = SIZE_MULTIPLE) -> torch.Tensor:
    """Zero-pad ``(..., H, W)`` on the right and bottom to sides that are multiples of ``multiple``."""
    height, width = images.shape[-2:]
    return F.pad(images, (0, -width % multiple, 0, -height % multiple))


@torch.no_grad()
def detect_image(model: OrientedDetector, image: torch.Tensor, *, patch_size: int, overlap: int,
                 score_threshold: float = 0.05, merge_iou: float = DEFAULT_MERGE_IOU,
                 device: torch.device | str = "cpu") -> ImageDetections:
    """Detections of a uint8 image ``(3, H, W)`` by ``model`` (in eval mode), patch by patch."""
    found, patches, rois, refined = [], 0, 0, 0
    for window, view in image_patches(image, patch_size=patch_size, overlap=overlap):
        pixels = pad_to_multiple(view.to(device).float().div_(255))[None]
        output = model(pixels, score_threshold=score_threshold)
        detections = output.detections[0]
        centre_x, centre_y = detections.boxes[:, 0], detections.boxes[:, 1]
        keep = ((detections.scores > score_threshold) & (centre_x < window.width) & (centre_y < window.height))
        found.append((window, detections.boxes[keep].cpu(), detections.scores[keep].cpu(),
                      detections.labels[keep].cpu()))
        patches, rois, refined = patches + 1, rois + output.rois, refined + output.refined
    boxes, scores, labels = merge_patch_detections(found, iou_threshold=merge_iou)
    return ImageDetections(boxes, scores, labels, patches, rois, refined)
