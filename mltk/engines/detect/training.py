"""Training an oriented detector on the shared step loop: what ``oriented-rcnn`` and ``uagdet`` share.

One step::

    patches = this rank's slice of the step's patches (order: a function of seed and epoch)
    patches = flip(patches)                      # horizontal, per patch, from the step's seeded generator
    losses  = detector(pad(patches), boxes)      # proposal, RoI head, and (uagdet) graph losses
    sum(losses).backward(); SGD step             # DDP averages the gradients

The learning rate is mmrotate's 1x schedule as a pure function of the
step: linear warm-up from ``warmup_ratio * lr`` over ``warmup_steps``, then
x0.1 at each ``decay_at`` fraction of the run. Every random draw of a step
(flips, anchor and RoI sampling, MC dropout) comes from the global generator
the loop re-seeds from (seed, step, rank), so a resumed run ends
bit-identical (on CPU) to an uninterrupted one.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from mltk.core.loop import OneModelTask, StepLoop, StepOutput
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.seeding import seed_everything
from mltk.data.batches import epoch_order, step_indices, steps_per_epoch
from mltk.engines.detect.artifact import detector_artifact
from mltk.engines.detect.backbone import load_backbone_weights
from mltk.engines.detect.boxes import normalize_le90
from mltk.engines.detect.config import OrientedRcnnConfig
from mltk.engines.detect.data import (
    CLASS_LISTS,
    Region,
    resolve_dota_folder,
    split_regions,
    training_patches,
)
from mltk.engines.detect.dota import DotaDetections
from mltk.engines.detect.evaluation import evaluate_task1
from mltk.engines.detect.inference import detect_image, pad_to_multiple
from mltk.engines.detect.model import LOSS_NAMES, DetectorSpec, OrientedDetector, total_loss

PRIMARY_METRIC = "val_mAP"


def learning_rate(step: int, *, total_steps: int, base_lr: float, warmup_steps: int, warmup_ratio: float,
                  decay_at: tuple[float, ...]) -> float:
    """The learning rate of ``step``."""
    factor = 0.1 ** sum(step >= math.floor(point * total_steps) for point in decay_at)
    if step < warmup_steps:
        progress = step / warmup_steps
        factor *= warmup_ratio + (1 - warmup_ratio) * progress
    return base_lr * factor


def flip_horizontally(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror an image ``(3, h, w)`` and its le90 boxes ``(N, 5)`` left to right."""
    width = image.shape[-1]
    cx, cy, w, h, theta = boxes.unbind(1)
    return image.flip(-1), normalize_le90(torch.stack([width - cx, cy, w, h, -theta], 1))


def evaluate_regions(model: OrientedDetector, regions: list[Region], *, patch_size: int, overlap: int,
                     device: torch.device, use_07_metric: bool = True) -> dict:
    """DOTA task-1 mAP (AP50, VOC07 11-point or area) of the model on labelled regions, with the fraction
    of RoIs refined and the regions per second."""
    was_training = model.training
    model.eval()
    detections, rois, refined, started = {}, 0, 0, time.perf_counter()
    for region in regions:
        found = detect_image(model, region.image, patch_size=patch_size, overlap=overlap, device=device)
        detections[region.region_id] = DotaDetections.from_boxes(found.boxes, found.labels, found.scores,
                                                                 model.spec.classes)
        rois, refined = rois + found.rois, refined + found.refined
    seconds = time.perf_counter() - started
    model.train(was_training)
    ground_truth = {region.region_id: region.labels for region in regions}
    present = tuple(sorted({name for labels in ground_truth.values() for name in labels.class_names()},
                           key=model.spec.classes.index))
    scored = evaluate_task1(ground_truth, detections, classes=present, use_07_metric=use_07_metric)
    return {"mAP": scored.mean_ap, "AP": {name: r.ap for name, r in scored.per_class.items()},
            "refined_fraction": refined / rois if rois else None, "images_per_s": len(regions) / max(seconds, 1e-9),
            "detections": sum(len(found) for found in detections.values()), "metric": scored.to_dict()["metric"],
            "ground_truth": scored.to_dict()["ground_truth"]}


class DetectorTraining(OneModelTask):
    """The recipe side of the step loop for either detector recipe (the config decides the graph)."""

    def __init__(self, cfg: OrientedRcnnConfig, ctx: RunContext):
        self.cfg = cfg
        self.ctx = ctx
        # Steps without an uncertain RoI leave the graph's parameters out of the loss.
        self.has_unused_parameters = cfg.graph_settings().refine != "none"

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        seed_everything(cfg.seed)
        data = cfg.data
        self.train_regions, self.val_regions = split_regions(
            resolve_dota_folder(data.name), classes=data.classes, val_fraction=data.val_fraction,
            min_inside=data.min_inside, val_side=data.val_side)
        self.patches = training_patches(self.train_regions, patch_size=data.patch_size, overlap=data.overlap,
                                        min_inside=data.min_inside, keep_empty=data.keep_empty)
        objects = sum(len(patch.labels) for patch in self.patches)
        ctx.reporter.info(f"data: {data.name}: {len(self.train_regions)} training and {len(self.val_regions)} "
                          f"held-out regions; {len(self.patches)} training patches of {data.patch_size} "
                          f"({objects} objects)")
        self.steps_per_epoch = steps_per_epoch(len(self.patches), cfg.train.batch_size)
        self.total_steps = cfg.train.epochs * self.steps_per_epoch
        if cfg.train.max_steps:
            self.total_steps = min(self.total_steps, cfg.train.max_steps)

        m = cfg.model
        spec = DetectorSpec(classes=CLASS_LISTS[data.classes], backbone=m.backbone, fpn_channels=m.fpn_channels,
                            norm=m.norm, proposals=m.proposals, roi=m.roi, graph=cfg.graph_settings())
        self.model = OrientedDetector(spec)
        if m.backbone_weights:
            loaded = load_backbone_weights(self.model.pyramid, m.backbone_weights)
            ctx.reporter.info(f"backbone: {loaded} tensors from {m.backbone_weights}")
        else:
            ctx.reporter.info(f"backbone: {m.backbone} trained from scratch (no model.backbone_weights)")
        self.model.to(ctx.device)
        o = cfg.optim
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                         weight_decay=o.weight_decay)
        self.loop = StepLoop(ctx, settings=cfg.train, seed=cfg.seed, total_steps=self.total_steps,
                             description="train", grad_clip=o.grad_clip)
        self.loop.restore(self)
        self._order, self._order_epoch = None, -1

    # ------------------------------------------------------------ the loop's StepTask

    def learning_rate(self, step: int) -> float:
        o = self.cfg.optim
        return learning_rate(step, total_steps=self.total_steps, base_lr=o.lr, warmup_steps=o.warmup_steps,
                             warmup_ratio=o.warmup_ratio, decay_at=o.decay_at)

    def forward(self, step: int, module: torch.nn.Module) -> StepOutput:
        ctx = self.ctx
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        if epoch != self._order_epoch:
            self._order = epoch_order(len(self.patches), seed=self.cfg.seed, epoch=epoch)
            self._order_epoch = epoch
        chosen = step_indices(self._order, step_in_epoch, batch_size=self.cfg.train.batch_size,
                              rank=ctx.dist.rank, world_size=ctx.dist.world_size)
        images, targets = self._batch(chosen.tolist())
        losses = module(images, targets)
        stats = {name: losses[name].detach() for name in LOSS_NAMES if name in losses}
        stats["refined_fraction"] = losses["refined_fraction"]
        return StepOutput(total_loss(losses), stats, count=len(targets))

    def _batch(self, indices: list[int]) -> tuple[torch.Tensor, list[dict]]:
        """The patches ``indices``, flipped where the step's draw says, padded to one size."""
        flips = torch.rand(len(indices)) < 0.5 if self.cfg.train.flip else torch.zeros(len(indices), dtype=torch.bool)
        images, targets = [], []
        for index, flip in zip(indices, flips.tolist(), strict=True):
            patch = self.patches[index]
            window = patch.window
            image = self.train_regions[patch.region].image[:, window.top:window.top + window.height,
                                                           window.left:window.left + window.width]
            boxes = patch.boxes
            if flip:
                image, boxes = flip_horizontally(image, boxes)
            images.append(image)
            targets.append({"boxes": boxes.to(self.ctx.device), "labels": patch.labels.to(self.ctx.device)})
        height = max(image.shape[1] for image in images)
        width = max(image.shape[2] for image in images)
        batch = torch.stack([F.pad(image, (0, width - image.shape[2], 0, height - image.shape[1]))
                             for image in images])
        return pad_to_multiple(batch.to(self.ctx.device).float().div_(255)), targets

    def log_due(self, done: int) -> bool:
        return done % self.cfg.train.log_every == 0

    # ------------------------------------------------------------ results

    def evaluate(self) -> dict:
        if not self.val_regions:
            return {PRIMARY_METRIC: None, "val_note": "no held-out region (data.val_fraction is 0)"}
        data = self.cfg.data
        scores = evaluate_regions(self.model, self.val_regions, patch_size=data.patch_size, overlap=data.overlap,
                                  device=self.ctx.device)
        return {PRIMARY_METRIC: scores["mAP"], "val_AP": scores["AP"],
                "val_refined_fraction": scores["refined_fraction"], "val_images_per_s": scores["images_per_s"],
                "val_detections": scores["detections"], "val_regions": len(self.val_regions)}

    def save(self, metrics: dict) -> ArtifactRecord:
        cfg = self.cfg
        files, card = detector_artifact(
            self.model, engine="detect", recipe=cfg.recipe, config=cfg, metrics=metrics,
            primary_metric=PRIMARY_METRIC, parent=cfg.data.name, patch_size=cfg.data.patch_size,
            overlap=cfg.data.overlap,
            extra={"run_dir": str(self.ctx.run.path),
                   "backbone_weights": cfg.model.backbone_weights or "none (trained from scratch)"})
        return self.ctx.registry.save(cfg.artifact_name(), files=files, card=card)
