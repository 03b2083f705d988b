"""The two-stage oriented detector (Oriented R-CNN family), with UAGDet's graph refinement as an option.

::

    levels     = FPN(ResNet(images))                       # strides 4, 8, 16, 32
    proposals  = rotated NMS(decode(anchors, proposal head(levels)))
    features   = rotated RoIAlign(levels, proposals)       # 7 x 7 per proposal
    f          = FC(FC(features));  logits, deltas = classifier(f), regressor(f)
    f'         = graph refinement of uncertain RoIs (uagdet.py; refine=none skips it)
    detections = per-class rotated NMS(decode(proposals, deltas(f')), softmax(logits(f')))

``OrientedDetector(images, targets)`` in training mode returns the losses
(a dict of 0-d tensors); in eval mode ``OrientedDetector(images)`` returns
a :class:`DetectorOutput`: one :class:`Detections` per image and the count
of RoIs refined (``score_threshold`` raises the spec's). Images
are ``(B, 3, H, W)`` floats in [0, 1], H and W multiples of 32; targets are
``{"boxes": (N, 5) le90 in pixels, "labels": (N,)}`` per image.

The whole architecture is described by a :class:`DetectorSpec`, which the
artifact's card stores: the model is rebuilt from it, never unpickled.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from mltk.core.sections import check_values
from mltk.engines.detect.backbone import BODIES, FeaturePyramid
from mltk.engines.detect.proposals import (
    ProposalHead,
    ProposalSettings,
    anchors_for,
    proposal_loss,
    select_proposals,
)
from mltk.engines.detect.roi_head import (
    BoxHead,
    Detections,
    RoiSettings,
    assign_rois,
    detections_from_rois,
    pool_rois,
    roi_losses,
)
from mltk.engines.detect.uagdet import (
    GraphRefiner,
    GraphSettings,
    graph_edges,
    mc_dropout_uncertainty,
    normalized_entropy,
    split_nodes,
)

SIZE_MULTIPLE = 32  # the coarsest stride: padded inputs keep every level aligned


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
    """Everything needed to rebuild the detector (stored in the artifact's card)."""

    classes: tuple[str, ...]
    backbone: str = "resnet18"
    fpn_channels: int = 256
    norm: str = "batch"
    proposals: ProposalSettings = dataclasses.field(default_factory=ProposalSettings)
    roi: RoiSettings = dataclasses.field(default_factory=RoiSettings)
    graph: GraphSettings = dataclasses.field(default_factory=GraphSettings)

    @classmethod
    def from_dict(cls, spec: dict) -> DetectorSpec:
        return cls(classes=tuple(spec["classes"]), backbone=spec["backbone"], fpn_channels=spec["fpn_channels"],
                   norm=spec["norm"],
                   proposals=ProposalSettings(**{**spec["proposals"],
                                                 "anchor_ratios": tuple(spec["proposals"]["anchor_ratios"])}),
                   roi=RoiSettings(**spec["roi"]), graph=GraphSettings(**spec["graph"]))

    def value_problems(self) -> list[str]:
        problems = check_values(self, {"fpn_channels": "positive"})
        if self.backbone not in BODIES:
            problems.append(f"backbone: {self.backbone!r} is not one of {', '.join(BODIES)}")
        return problems


@dataclasses.dataclass
class DetectorOutput:
    detections: list[Detections]
    rois: int  # RoIs the head scored (before NMS)
    refined: int  # of which the graph refined


class OrientedDetector(nn.Module):
    def __init__(self, spec: DetectorSpec):
        super().__init__()
        self.spec = spec
        self.num_classes = len(spec.classes)
        self.pyramid = FeaturePyramid(backbone=spec.backbone, fpn_channels=spec.fpn_channels, norm=spec.norm)
        self.proposal_head = ProposalHead(spec.fpn_channels, len(spec.proposals.anchor_ratios))
        self.box_head = BoxHead(spec.fpn_channels, spec.roi.pooled_size, spec.roi.representation,
                                self.num_classes)
        self.refiner = (GraphRefiner(spec.roi.representation, spec.graph.hidden)
                        if spec.graph.refine != "none" else None)

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None, *,
                score_threshold: float | None = None):
        if images.shape[-1] % SIZE_MULTIPLE or images.shape[-2] % SIZE_MULTIPLE:
            raise ValueError(f"image sides must be multiples of {SIZE_MULTIPLE}, got {tuple(images.shape[-2:])}")
        spec = self.spec
        levels = self.pyramid(images)
        anchors = anchors_for(levels, self.pyramid.strides, spec.proposals)
        scores, deltas = self.proposal_head(levels)
        proposals = select_proposals(anchors, [s.detach() for s in scores], [d.detach() for d in deltas],
                                     spec.proposals, tuple(images.shape[-2:]))
        if self.training:
            if targets is None:
                raise ValueError("training needs targets")
            losses = proposal_loss(anchors, scores, deltas, targets, spec.proposals)
            roi_targets = assign_rois(proposals, targets, self.num_classes, spec.roi)
            rois = roi_targets.rois
        else:
            rois = torch.cat([torch.cat([p.new_full((p.shape[0], 1), index), p], 1)
                              for index, p in enumerate(proposals)])
        representation = self.box_head.represent(pool_rois(levels, self.pyramid.strides, rois,
                                                           spec.roi.pooled_size))
        logits, box_deltas = self.box_head.predict(representation)
        if self.training:
            losses["roi_class"], losses["roi_box"] = roi_losses(logits, box_deltas, roi_targets)

        refined_nodes = rois.new_zeros(0, dtype=torch.long)
        if self.refiner is not None:
            uncertainty = self.uncertainty(logits, representation)
            sources, graph_targets = split_nodes(uncertainty, spec.graph)
            centers = rois[:, 1:3]
            edge_sources, edge_targets = graph_edges(centers, representation, rois[:, 0].long(), sources,
                                                     graph_targets, neighbours=spec.graph.neighbours,
                                                     radius=spec.graph.radius)
            refined, refined_nodes = self.refiner(representation, centers, edge_sources, edge_targets,
                                                  spec.graph.radius)
            refined_logits, refined_deltas = self.box_head.predict(refined[refined_nodes])
            if self.training:
                chosen = dataclasses.replace(roi_targets, labels=roi_targets.labels[refined_nodes],
                                             deltas=roi_targets.deltas[refined_nodes],
                                             positive=roi_targets.positive[refined_nodes])
                weights = 1 + spec.graph.beta * uncertainty[refined_nodes]
                losses["graph_class"], losses["graph_box"] = roi_losses(
                    refined_logits, refined_deltas, chosen, weights=weights, count=rois.shape[0])
            else:
                logits = logits.index_copy(0, refined_nodes, refined_logits)
                box_deltas = box_deltas.index_copy(0, refined_nodes, refined_deltas)
        if self.training:
            losses["refined_fraction"] = torch.tensor(refined_nodes.numel() / max(rois.shape[0], 1))
            return losses
        was_refined = torch.zeros(rois.shape[0], dtype=torch.bool, device=rois.device)
        was_refined[refined_nodes] = True
        # A higher threshold than the spec's drops boxes before NMS, where they would only cost time:
        # greedy NMS never lets a lower score suppress a higher one, so the survivors above it are the same.
        settings = spec.roi if score_threshold is None else dataclasses.replace(
            spec.roi, score_threshold=max(score_threshold, spec.roi.score_threshold))
        detections = detections_from_rois(rois, logits, box_deltas, was_refined, images.shape[0], settings)
        return DetectorOutput(detections, rois.shape[0], refined_nodes.numel())

    def uncertainty(self, logits: torch.Tensor, representation: torch.Tensor) -> torch.Tensor:
        """Each RoI's uncertainty ``(K,)`` in [0, 1], from the source the spec names; no gradient flows."""
        graph = self.spec.graph
        if graph.uncertainty == "mc-dropout":
            return mc_dropout_uncertainty(self.box_head.classifier, representation.detach(),
                                          samples=graph.mc_samples, rate=graph.mc_dropout)
        return normalized_entropy(logits.detach().float().softmax(1))


LOSS_NAMES = ("proposal_objectness", "proposal_box", "roi_class", "roi_box", "graph_class", "graph_box")


def total_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sum of the detector's losses (the statistics in ``losses`` are not losses)."""
    return sum(losses[name] for name in LOSS_NAMES if name in losses)
