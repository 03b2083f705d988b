"""``mltk train supervised``: train an image classifier with cross-entropy.

The baseline every other engine compares against, and the trainer that
condensation, quantization and few-shot learning evaluate with. One step::

    images  = train images of this step (this rank's slice), to float [0, 1]
    images  = augment(images)                      # crop (+ flip where allowed)
    loss    = cross_entropy(model(images), labels)
    loss.backward(); optimizer.step()              # DDP averages the gradients

Determinism: the step's images and random draws depend only on (seed, step,
rank), and a checkpoint holds the weights, the optimizer state and the step,
so a resumed run ends bit-identical (on CPU) to an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mltk.core.catalog import register_recipe
from mltk.core.config import config_hash, to_dict
from mltk.core.loop import OneModelTask, StepLoop, StepOutput
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.seeding import generator, seed_everything
from mltk.data.batches import epoch_order, per_rank_batch, step_indices, steps_per_epoch
from mltk.data.datasets import dataset_info
from mltk.data.images.augment import crop_flip, crop_padding
from mltk.data.splits import load_splits
from mltk.engines.supervised.config import SupervisedConfig
from mltk.engines.supervised.pretrained import start_from
from mltk.nn import build_model
from mltk.nn.artifacts import classifier_artifact
from mltk.nn.classifiers.evaluation import evaluate_classifier

PRIMARY_METRIC = "test_accuracy"
REANCHOR_IMAGES = 256  # training images that re-anchor a pretrained network's folded BatchNorms


def learning_rate(step: int, *, total_steps: int, steps_per_epoch: int, base_lr: float,
                  schedule: str, warmup_epochs: float) -> float:
    """The learning rate of ``step`` (a pure function of the step, so it needs no saved state)."""
    warmup = int(warmup_epochs * steps_per_epoch)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        return base_lr * (0.1 if step >= total_steps // 2 else 1.0)
    progress = (step - warmup) / max(1, total_steps - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


@register_recipe("supervised", config=SupervisedConfig, default_preset="digits",
                 description="train an image classifier (ConvNet, CIFAR ResNets, MobileNetV2) with cross-entropy")
class SupervisedRecipe(OneModelTask):
    def __init__(self, cfg: SupervisedConfig, ctx: RunContext):
        self.cfg = cfg
        self.ctx = ctx

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        seed_everything(cfg.seed)
        self.splits = load_splits(cfg.data)
        train = self.splits.train
        ctx.reporter.info(f"data: {cfg.data.name}: {len(train)} train, "
                          f"{len(self.splits.val) if self.splits.val else 0} val, "
                          f"{len(self.splits.test)} test images of {tuple(train.image_shape)}, "
                          f"{train.num_classes} classes")
        self.local_batch = per_rank_batch(cfg.train.batch_size, ctx.dist.world_size)
        self.steps_per_epoch = steps_per_epoch(len(train), cfg.train.batch_size)
        self.total_steps = cfg.train.epochs * self.steps_per_epoch
        if cfg.train.max_steps:
            self.total_steps = min(self.total_steps, cfg.train.max_steps)
        self.augment = _augment_mode(cfg.train.augment, cfg.data.name)

        channels, height, _ = train.image_shape
        self.parent, self.relation = f"dataset:{cfg.data.name}", "trained"
        if cfg.init:
            started = start_from(cfg.init, num_classes=train.num_classes, in_channels=channels, image_size=height,
                                 options=cfg.init_options, mean=cfg.model.mean, std=cfg.model.std,
                                 images=train.images[:REANCHOR_IMAGES].float().div(255), registry=ctx.registry)
            fresh = ", ".join(started.fresh[:4]) + (", ..." if len(started.fresh) > 4 else "")
            ctx.reporter.info(f"init: {started.model.arch} from {started.source}: {started.copied} tensors copied, "
                              f"{len(started.fresh)} fresh" + (f" ({fresh})" if started.fresh else "")
                              + (f"; {started.reanchored} folded BatchNorms re-anchored on "
                                 f"{min(REANCHOR_IMAGES, len(train))} training images" if started.reanchored else ""))
            self.model, self.parent, self.relation = started.model, started.source, "fine-tuned"
        else:
            mean, std = cfg.model.mean, cfg.model.std
            if mean is None or std is None:
                measured_mean, measured_std = _channel_stats(train.images)
                mean = mean if mean is not None else measured_mean
                std = std if std is not None else measured_std
            self.model = build_model(cfg.model.arch, num_classes=train.num_classes, in_channels=channels,
                                     image_size=height, mean=mean, std=std, **cfg.model.options)
        self.model.to(ctx.device)
        self.optimizer = _make_optimizer(self.model, cfg)
        self.loop = StepLoop(ctx, settings=cfg.train, seed=cfg.seed, total_steps=self.total_steps,
                             description="train", grad_clip=cfg.optim.grad_clip)
        self.loop.restore(self)
        # Small datasets live on the device: one copy instead of one per step.
        self.train_images = train.images.to(ctx.device)
        self.train_labels = train.labels.to(ctx.device)
        self._order, self._order_epoch = None, -1

    # ------------------------------------------------------------ training (the loop's StepTask)

    def learning_rate(self, step: int) -> float:
        o = self.cfg.optim
        return learning_rate(step, total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch,
                             base_lr=o.lr, schedule=o.schedule, warmup_epochs=o.warmup_epochs)

    def forward(self, step: int, module: torch.nn.Module) -> StepOutput:
        ctx, batch_size = self.ctx, self.cfg.train.batch_size
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        if epoch != self._order_epoch:
            self._order = epoch_order(len(self.train_labels), seed=self.cfg.seed, epoch=epoch)
            self._order_epoch = epoch
        idx = step_indices(self._order, step_in_epoch, batch_size=batch_size,
                           rank=ctx.dist.rank, world_size=ctx.dist.world_size).to(ctx.device)
        images = self.train_images[idx].float().div_(255)
        labels = self.train_labels[idx]
        if self.augment != "none":
            images = crop_flip(images, padding=crop_padding(images.shape[-1]), flip=self.augment == "crop-flip",
                               generator=generator(self.cfg.seed, step), global_batch=batch_size,
                               start=ctx.dist.rank * self.local_batch)
        logits = module(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.optim.label_smoothing)
        accuracy = (logits.detach().argmax(1) == labels).double().mean()
        return StepOutput(loss, {"accuracy": accuracy}, count=len(labels))

    def log_due(self, done: int) -> bool:
        return done % self.steps_per_epoch == 0

    def log_record(self, done: int, means: dict[str, float], lr: float | None) -> tuple[str, dict]:
        epoch = (done - 1) // self.steps_per_epoch + 1
        record = {"epoch": epoch, "lr": lr, "train_loss": means["loss"], "train_accuracy": means["accuracy"]}
        if self.splits.val is not None:
            val = self._evaluate(self.splits.val)
            record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            self.model.train()
        return f"epoch {epoch}/{self.cfg.train.epochs}", record

    def progress_fields(self, step: int) -> dict:
        return {"epoch": step // self.steps_per_epoch + 1}

    # ------------------------------------------------------------ results

    def _evaluate(self, dataset) -> dict:
        return evaluate_classifier(self.model, dataset, batch_size=self.cfg.train.eval_batch_size,
                                   device=self.ctx.device, dist=self.ctx.dist)

    def evaluate(self) -> dict:
        test = self._evaluate(self.splits.test)
        metrics = {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "test_images": test["count"]}
        if self.splits.val is not None:
            val = self._evaluate(self.splits.val)
            metrics.update(val_accuracy=val["accuracy"], val_loss=val["loss"])
        return metrics

    def save(self, metrics: dict) -> ArtifactRecord:
        cfg = self.cfg
        files, card = classifier_artifact(
            self.model, engine="supervised", data=cfg.data, class_names=self.splits.train.class_names,
            config=to_dict(cfg), config_sha256=config_hash(cfg), metrics=metrics,
            primary_metric=PRIMARY_METRIC, parent=self.parent, relation=self.relation,
            extra={"run_dir": str(self.ctx.run.path)})
        return self.ctx.registry.save(cfg.artifact_name(), files=files, card=card)


def _augment_mode(augment: str, dataset: str) -> str:
    if augment != "auto":
        return augment
    return "crop-flip" if dataset_info(dataset).flip_ok else "crop"


def _channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images [N, C, H, W], on the [0, 1] scale."""
    x = images.float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    std = x.std(dim=1).clamp_min(1e-3)
    return [round(v, 6) for v in x.mean(dim=1).tolist()], [round(v, 6) for v in std.tolist()]


def _make_optimizer(model: torch.nn.Module, cfg: SupervisedConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                               weight_decay=o.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
