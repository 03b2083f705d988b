"""Oriented proposals: horizontal anchors regressed to rotated boxes, scored, and thinned by rotated NMS.

Every location of every pyramid level holds ``len(anchor_ratios)``
horizontal anchors of side ``anchor_scale * stride`` (aspect ratios
``h / w``). A shared 3x3 convolution feeds two 1x1 ones: an objectness logit
per anchor and five rotated-box deltas per anchor, decoded by
``RotatedDeltaCoder`` against the anchor taken as a le90 box of angle 0
(or -pi/2 when it is taller than wide).

Our interpretation: Oriented R-CNN's proposal head regresses six
"midpoint offset" numbers per anchor; we regress the five le90 deltas the
RoI head uses, with unit standard deviations. Like Oriented R-CNN (mmrotate's
``OrientedRPNHead``), anchors are assigned by horizontal IoU against the
ground truth's enclosing horizontal boxes: positive at IoU >= 0.7, negative
below 0.3, and each object's best anchors positive when at least 0.3;
256 anchors an image are sampled, at most half positive.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou

from mltk.core.sections import check_values
from mltk.engines.detect.boxes import RotatedDeltaCoder, horizontal_bounds, normalize_le90
from mltk.engines.detect.nms import batched_rotated_nms

PROPOSAL_CODER = RotatedDeltaCoder(stds=(1.0, 1.0, 1.0, 1.0, 1.0))
POSITIVE_IOU, NEGATIVE_IOU, MIN_POSITIVE_IOU = 0.7, 0.3, 0.3
SMOOTH_L1_BETA = 1.0 / 9.0  # mmrotate's proposal head
MIN_PROPOSAL_SIDE = 1.0  # pixels; thinner proposals have no area to pool from


@dataclasses.dataclass(frozen=True)
class ProposalSettings:
    anchor_scale: float = 8.0
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    sampled_anchors: int = 256  # per image, for the loss
    positive_fraction: float = 0.5
    pre_nms_per_level: int = 2000  # best-scored anchors kept per level before NMS
    post_nms: int = 2000  # proposals per image after NMS
    nms_iou: float = 0.8

    def value_problems(self) -> list[str]:
        problems = check_values(self, {"anchor_scale": "positive", "sampled_anchors": "positive",
                                       "positive_fraction": "fraction", "pre_nms_per_level": "positive",
                                       "post_nms": "positive", "nms_iou": "fraction"})
        if not self.anchor_ratios or min(self.anchor_ratios) <= 0:
            problems.append("anchor_ratios: needs at least one ratio, each positive")
        return problems


def level_anchors(height: int, width: int, stride: int, settings: ProposalSettings,
                  device: torch.device) -> torch.Tensor:
    """Horizontal anchors ``(height * width * A, 4)`` as ``(cx, cy, w, h)``, location-major, ratio-minor."""
    size = settings.anchor_scale * stride
    ratios = torch.tensor(settings.anchor_ratios, dtype=torch.float32, device=device)
    widths, heights = size / ratios.sqrt(), size * ratios.sqrt()
    ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) * stride
    xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    centers = torch.stack([cx.reshape(-1), cy.reshape(-1)], 1)
    count = ratios.numel()
    return torch.cat([centers.repeat_interleave(count, 0),
                      torch.stack([widths, heights], 1).repeat(centers.shape[0], 1)], 1)


def anchors_as_boxes(anchors: torch.Tensor) -> torch.Tensor:
    """``(N, 4)`` horizontal anchors -> le90 boxes ``(N, 5)``."""
    return normalize_le90(torch.cat([anchors, anchors.new_zeros(anchors.shape[0], 1)], 1))


def anchors_as_corners(anchors: torch.Tensor) -> torch.Tensor:
    """``(N, 4)`` ``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``."""
    half = anchors[:, 2:] / 2
    return torch.cat([anchors[:, :2] - half, anchors[:, :2] + half], 1)


class ProposalHead(nn.Module):
    """Pyramid levels -> per level objectness ``(B, H*W*A)`` and deltas ``(B, H*W*A, 5)``."""

    def __init__(self, channels: int, anchors_per_location: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, anchors_per_location, 1)
        self.deltas = nn.Conv2d(channels, anchors_per_location * 5, 1)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, levels: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        scores, deltas = [], []
        for features in levels:
            hidden = F.relu(self.conv(features))
            batch = features.shape[0]
            scores.append(self.objectness(hidden).permute(0, 2, 3, 1).reshape(batch, -1))
            deltas.append(self.deltas(hidden).permute(0, 2, 3, 1).reshape(batch, -1, 5))
        return scores, deltas


def sample_balanced(labels: torch.Tensor, total: int, positive_fraction: float) -> torch.Tensor:
    """Indices of at most ``total`` entries: positives (label 1) up to the fraction, the rest negatives (0).

    The draw uses the global generator, which the step loop re-seeds every step.
    """
    positives = (labels == 1).nonzero().squeeze(1)
    negatives = (labels == 0).nonzero().squeeze(1)
    keep_positive = min(positives.numel(), int(total * positive_fraction))
    keep_negative = min(negatives.numel(), total - keep_positive)
    positives = positives[torch.randperm(positives.numel(), device=labels.device)[:keep_positive]]
    negatives = negatives[torch.randperm(negatives.numel(), device=labels.device)[:keep_negative]]
    return torch.cat([positives, negatives])


def assign_anchors(anchors: torch.Tensor, gt_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchors ``(N, 4)`` against objects ``(M, 5)`` -> labels ``(N,)`` (1, 0, or -1 ignored), matched object ``(N,)``."""
    labels = torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
    if gt_boxes.shape[0] == 0:
        labels.fill_(0)
        return labels, torch.zeros_like(labels)
    iou = box_iou(anchors_as_corners(anchors), horizontal_bounds(gt_boxes).to(anchors))
    best_iou, matched = iou.max(1)
    labels[best_iou < NEGATIVE_IOU] = 0
    labels[best_iou >= POSITIVE_IOU] = 1
    # Each object also takes the anchors that overlap it most, so small objects are not left without one.
    best_per_object = iou.max(0).values
    for index in range(gt_boxes.shape[0]):
        if best_per_object[index] < MIN_POSITIVE_IOU:
            continue
        ties = (iou[:, index] == best_per_object[index]).nonzero().squeeze(1)
        labels[ties] = 1
        matched[ties] = index
    return labels, matched


def proposal_loss(anchors: list[torch.Tensor], scores: list[torch.Tensor], deltas: list[torch.Tensor],
                  targets: list[dict], settings: ProposalSettings) -> dict[str, torch.Tensor]:
    """Objectness BCE and delta smooth-L1 over each image's sampled anchors, averaged over all samples."""
    all_anchors = torch.cat(anchors)
    all_scores, all_deltas = torch.cat(scores, 1), torch.cat(deltas, 1)
    score_losses, delta_losses, sampled_count = [], [], 0
    for image, target in enumerate(targets):
        labels, matched = assign_anchors(all_anchors, target["boxes"])
        chosen = sample_balanced(labels, settings.sampled_anchors, settings.positive_fraction)
        sampled_count += chosen.numel()
        score_losses.append(F.binary_cross_entropy_with_logits(
            all_scores[image, chosen], labels[chosen].to(all_scores.dtype), reduction="sum"))
        positive = chosen[labels[chosen] == 1]
        if positive.numel():
            goal = PROPOSAL_CODER.encode(anchors_as_boxes(all_anchors[positive]),
                                         target["boxes"][matched[positive]].to(all_anchors))
            delta_losses.append(F.smooth_l1_loss(all_deltas[image, positive], goal, beta=SMOOTH_L1_BETA,
                                                 reduction="sum"))
    norm = max(sampled_count, 1)
    delta_total = torch.stack(delta_losses).sum() if delta_losses else all_deltas.sum() * 0
    return {"proposal_objectness": torch.stack(score_losses).sum() / norm, "proposal_box": delta_total / norm}


@torch.no_grad()
def select_proposals(anchors: list[torch.Tensor], scores: list[torch.Tensor], deltas: list[torch.Tensor],
                     settings: ProposalSettings, image_size: tuple[int, int]) -> list[torch.Tensor]:
    """Each image's proposals ``(P, 5)``, le90, best first: top anchors per level, decoded, rotated NMS per level."""
    height, width = image_size
    proposals = []
    for image in range(scores[0].shape[0]):
        boxes, box_scores, box_levels = [], [], []
        for level, (level_anchor, level_score, level_delta) in enumerate(zip(anchors, scores, deltas, strict=True)):
            top = level_score[image].topk(min(settings.pre_nms_per_level, level_score.shape[1])).indices
            decoded = PROPOSAL_CODER.decode(anchors_as_boxes(level_anchor[top]), level_delta[image, top].float())
            boxes.append(decoded)
            box_scores.append(level_score[image, top].float())
            box_levels.append(torch.full_like(top, level))
        boxes, box_scores, box_levels = torch.cat(boxes), torch.cat(box_scores), torch.cat(box_levels)
        # Centres outside the image carry nothing to pool; they are dropped with the slivers.
        inside = ((boxes[:, 0] >= 0) & (boxes[:, 0] <= width) & (boxes[:, 1] >= 0) & (boxes[:, 1] <= height))
        usable = inside & (boxes[:, 2:4] >= MIN_PROPOSAL_SIDE).all(1) & torch.isfinite(boxes).all(1)
        boxes, box_scores, box_levels = boxes[usable], box_scores[usable], box_levels[usable]
        kept = batched_rotated_nms(boxes, box_scores, box_levels, settings.nms_iou)[:settings.post_nms]
        proposals.append(boxes[kept])
    return proposals


def anchors_for(levels: list[torch.Tensor], strides: tuple[int, ...], settings: ProposalSettings) -> list[torch.Tensor]:
    """Every level's anchors, in the order of its head outputs."""
    return [level_anchors(features.shape[-2], features.shape[-1], stride, settings, features.device)
            for features, stride in zip(levels, strides, strict=True)]
