"""The RoI head: rotated RoIAlign features of each proposal, two FC layers, class scores and box deltas.

As Oriented R-CNN's (mmrotate's ``RotatedShared2FCBBoxHead``): a 7x7 rotated
RoIAlign from the pyramid level that matches the proposal's size (mmdet's
rule: level ``floor(log2(sqrt(w h) / 56))``, clamped), two fully connected
layers, then ``num_classes + 1`` class logits (the last is background) and
five class-agnostic deltas decoded by ``RotatedDeltaCoder``.

Training assigns proposals (and the objects themselves, added as
proposals) by exact rotated IoU: at least 0.5 with an object is that
object's class, below 0.5 background; 512 RoIs an image are sampled, at
most a quarter positive. Losses: cross-entropy over the sampled RoIs and
smooth L1 (beta 1) over the positives' deltas, both divided by the number
sampled.

The FC output of each RoI (its ``representation``) is what UAGDet's graph
refines; the same classifier and regressor read the refined one.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from mltk.core.sections import check_values
from mltk.engines.detect.boxes import RotatedDeltaCoder
from mltk.engines.detect.iou import rotated_iou_matrix
from mltk.engines.detect.nms import batched_rotated_nms
from mltk.engines.detect.proposals import sample_balanced
from mltk.engines.detect.roi_align import rotated_roi_align

ROI_CODER = RotatedDeltaCoder()
FINEST_SCALE = 56.0  # mmdet's RoI-to-level rule
POSITIVE_IOU = 0.5


@dataclasses.dataclass(frozen=True)
class RoiSettings:
    pooled_size: int = 7
    representation: int = 1024  # width of the two FC layers
    sampled_rois: int = 512  # per image, for the loss
    positive_fraction: float = 0.25
    score_threshold: float = 0.05  # detections kept per class above this score
    nms_iou: float = 0.1  # mmrotate's Oriented R-CNN test setting
    max_detections: int = 2000  # per patch

    def value_problems(self) -> list[str]:
        return check_values(self, {"pooled_size": "positive", "representation": "positive",
                                   "sampled_rois": "positive", "positive_fraction": "fraction",
                                   "score_threshold": "fraction", "nms_iou": "fraction",
                                   "max_detections": "positive"})


def pool_rois(levels: list[torch.Tensor], strides: tuple[int, ...], rois: torch.Tensor,
              pooled_size: int) -> torch.Tensor:
    """Rois ``(K, 6)`` = (image index, box) -> features ``(K, C, pooled_size, pooled_size)``, each from its level."""
    scale = (rois[:, 3] * rois[:, 4]).clamp_min(1e-6).sqrt()
    level_of = torch.floor(torch.log2(scale / FINEST_SCALE + 1e-6)).clamp(0, len(levels) - 1).long()
    # In float32 whatever autocast made of the features: RoIAlign casts the boxes to the features' dtype,
    # and half precision cannot place a sample in a 1024-pixel patch to better than a pixel or more.
    pooled = levels[0].new_zeros(rois.shape[0], levels[0].shape[1], pooled_size, pooled_size, dtype=torch.float32)
    for level, (features, stride) in enumerate(zip(levels, strides, strict=True)):
        members = (level_of == level).nonzero().squeeze(1)
        if members.numel():
            pooled[members] = rotated_roi_align(features.float(), rois[members].float(), pooled_size,
                                                spatial_scale=1.0 / stride)
    return pooled


class BoxHead(nn.Module):
    """Pooled features ``(K, C, S, S)`` -> representation ``(K, R)``; representation -> logits ``(K, classes + 1)``,
    deltas ``(K, 5)``."""

    def __init__(self, in_channels: int, pooled_size: int, representation: int, num_classes: int,
                 dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_channels * pooled_size * pooled_size, representation)
        self.fc2 = nn.Linear(representation, representation)
        self.classifier = nn.Linear(representation, num_classes + 1)
        self.regressor = nn.Linear(representation, 5)
        self.dropout = dropout
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.normal_(self.regressor.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)
        nn.init.zeros_(self.regressor.bias)

    def represent(self, pooled: torch.Tensor) -> torch.Tensor:
        hidden = F.dropout(F.relu(self.fc1(pooled.flatten(1))), self.dropout, self.training)
        return F.dropout(F.relu(self.fc2(hidden)), self.dropout, self.training)

    def predict(self, representation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classifier(representation), self.regressor(representation)


@dataclasses.dataclass
class RoiTargets:
    """The sampled RoIs of a batch and what each should predict."""

    rois: torch.Tensor  # (K, 6) image index, le90 box
    labels: torch.Tensor  # (K,) class index, num_classes for background
    deltas: torch.Tensor  # (K, 5) standardised targets; meaningful where positive
    positive: torch.Tensor  # (K,) bool


@torch.no_grad()
def assign_rois(proposals: list[torch.Tensor], targets: list[dict], num_classes: int,
                settings: RoiSettings) -> RoiTargets:
    """Each image's proposals ``(P, 5)`` plus its objects, matched by rotated IoU and sampled."""
    rois, labels, deltas, positive = [], [], [], []
    for image, (image_proposals, target) in enumerate(zip(proposals, targets, strict=True)):
        gt_boxes, gt_labels = target["boxes"].to(image_proposals), target["labels"]
        candidates = torch.cat([image_proposals, gt_boxes])
        if gt_boxes.shape[0]:
            best_iou, matched = rotated_iou_matrix(candidates, gt_boxes).max(1)
        else:
            best_iou = candidates.new_zeros(candidates.shape[0])
            matched = torch.zeros(candidates.shape[0], dtype=torch.long, device=candidates.device)
        is_positive = best_iou >= POSITIVE_IOU
        chosen = sample_balanced(is_positive.long(), settings.sampled_rois, settings.positive_fraction)
        chosen_boxes = candidates[chosen]
        chosen_positive = is_positive[chosen]
        chosen_labels = torch.full_like(chosen, num_classes)
        goal = torch.zeros_like(chosen_boxes)
        if gt_boxes.shape[0]:
            chosen_labels = torch.where(chosen_positive, gt_labels[matched[chosen]], chosen_labels)
            goal = ROI_CODER.encode(chosen_boxes, gt_boxes[matched[chosen]])
        rois.append(torch.cat([chosen_boxes.new_full((chosen.numel(), 1), image), chosen_boxes], 1))
        labels.append(chosen_labels)
        deltas.append(torch.where(chosen_positive[:, None], goal, torch.zeros_like(goal)))
        positive.append(chosen_positive)
    return RoiTargets(torch.cat(rois), torch.cat(labels), torch.cat(deltas), torch.cat(positive))


def roi_losses(logits: torch.Tensor, deltas: torch.Tensor, targets: RoiTargets,
               weights: torch.Tensor | None = None, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(class loss, box loss) summed over RoIs (times ``weights``) and divided by ``count`` (default: all RoIs)."""
    count = max(count if count is not None else targets.labels.numel(), 1)
    weights = torch.ones_like(targets.labels, dtype=logits.dtype) if weights is None else weights
    class_loss = (F.cross_entropy(logits.float(), targets.labels, reduction="none") * weights).sum() / count
    box_loss = F.smooth_l1_loss(deltas.float(), targets.deltas, beta=1.0, reduction="none").sum(1)
    box_loss = (box_loss * weights * targets.positive).sum() / count
    return class_loss, box_loss


@dataclasses.dataclass
class Detections:
    """One image's (or patch's) detections, best first: le90 ``boxes`` ``(N, 5)``, ``scores``, ``labels``,
    and ``refined`` (whether UAGDet's graph refined the RoI each came from)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    refined: torch.Tensor

    def __len__(self) -> int:
        return self.boxes.shape[0]


@torch.no_grad()
def detections_from_rois(rois: torch.Tensor, logits: torch.Tensor, deltas: torch.Tensor, refined: torch.Tensor,
                         num_images: int, settings: RoiSettings) -> list[Detections]:
    """Per image: decode every RoI's box, keep each class above the threshold, rotated NMS per class."""
    probabilities = logits.float().softmax(1)[:, :-1]
    boxes = ROI_CODER.decode(rois[:, 1:], deltas.float())
    found = []
    for image in range(num_images):
        members = (rois[:, 0] == image).nonzero().squeeze(1)
        roi_index, label = (probabilities[members] > settings.score_threshold).nonzero(as_tuple=True)
        roi_index = members[roi_index]
        image_boxes, scores = boxes[roi_index], probabilities[roi_index, label]
        usable = torch.isfinite(image_boxes).all(1) & (image_boxes[:, 2:4] > 0).all(1)
        roi_index, label, image_boxes, scores = roi_index[usable], label[usable], image_boxes[usable], scores[usable]
        kept = batched_rotated_nms(image_boxes, scores, label, settings.nms_iou)[:settings.max_detections]
        found.append(Detections(image_boxes[kept], scores[kept], label[kept], refined[roi_index[kept]]))
    return found

