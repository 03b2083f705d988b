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
import time

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from mltk.core.catalog import register_recipe
from mltk.core.config import config_hash, to_dict
from mltk.core.device import amp_dtype, autocast
from mltk.core.errors import ConfigError
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.runs import checkpoint_due
from mltk.core.seeding import generator, seed_everything, seed_step
from mltk.data.augment import crop_flip, crop_padding
from mltk.data.batches import epoch_order, per_rank_batch, step_indices, steps_per_epoch
from mltk.data.catalog import dataset_info
from mltk.data.splits import load_splits
from mltk.engines.supervised.config import SupervisedConfig
from mltk.nn import build_model
from mltk.nn.artifacts import classifier_artifact
from mltk.nn.evaluation import evaluate_classifier

PRIMARY_METRIC = "test_accuracy"


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
class SupervisedRecipe:
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
        mean, std = cfg.model.mean, cfg.model.std
        if mean is None or std is None:
            measured_mean, measured_std = _channel_stats(train.images)
            mean = mean if mean is not None else measured_mean
            std = std if std is not None else measured_std
        self.model = build_model(cfg.model.arch, num_classes=train.num_classes, in_channels=channels,
                                 image_size=height, mean=mean, std=std, **cfg.model.options)
        self.model.to(ctx.device)
        self.optimizer = _make_optimizer(self.model, cfg)
        self.amp = amp_dtype(ctx.device, cfg.train.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.start_step = 0
        self._reset_running()
        if ctx.resume_from is not None:
            self._restore(ctx.resume_from)
        self.train_model = self.model
        if ctx.dist.enabled:
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        if cfg.train.compile:
            self.train_model = torch.compile(self.train_model)
        # Small datasets live on the device: one copy instead of one per step.
        self.train_images = train.images.to(ctx.device)
        self.train_labels = train.labels.to(ctx.device)

    def _restore(self, ckpt) -> None:
        self.model.load_state_dict(ckpt.load_model_state())
        state = ckpt.load_trainer_state()
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_step = int(state["step"])
        self._reset_running(**state["running"])
        if state.get("total_steps") != self.total_steps:
            self.ctx.reporter.warn(f"the checkpoint was written for {state.get('total_steps')} steps, "
                                   f"this config runs {self.total_steps}")

    # ------------------------------------------------------------ training

    def train(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        self.train_model.train()
        order, order_epoch = None, -1
        with ctx.reporter.progress(self.total_steps, start=self.start_step, description="train") as bar:
            epoch_started = last_checkpoint = time.perf_counter()
            for step in range(self.start_step, self.total_steps):
                ctx.stop_if_asked(step, self.total_steps, self._checkpoint)
                epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
                if epoch != order_epoch:
                    order, order_epoch = epoch_order(len(self.train_labels), seed=cfg.seed, epoch=epoch), epoch
                lr = learning_rate(step, total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch,
                                   base_lr=cfg.optim.lr, schedule=cfg.optim.schedule,
                                   warmup_epochs=cfg.optim.warmup_epochs)
                loss, correct = self._step(step, order, step_in_epoch, lr)
                self.running["loss_sum"] += loss.double() * self.local_batch
                self.running["correct"] += correct
                self.running["seen"] += self.local_batch
                done = step + 1
                if bar.wants_update():  # reading the loss syncs a GPU: only as often as the bar redraws
                    bar.update(done, epoch=epoch + 1, lr=lr,
                               loss=float(self.running["loss_sum"]) / self.running["seen"])
                end_of_epoch = done % self.steps_per_epoch == 0 or done == self.total_steps
                if end_of_epoch:
                    self._end_epoch(epoch, done, lr, time.perf_counter() - epoch_started, bar)
                    epoch_started = time.perf_counter()
                if checkpoint_due(done, self.total_steps, every_steps=cfg.train.ckpt_every,
                                  every_minutes=cfg.train.ckpt_minutes, last_saved=last_checkpoint):
                    self._checkpoint(done)
                    last_checkpoint = time.perf_counter()
            bar.update(self.total_steps)

    def _step(self, step: int, order: torch.Tensor, step_in_epoch: int,
              lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step; (mean loss, number correct) of this rank's batch, as 0-d tensors."""
        ctx, batch_size = self.ctx, self.cfg.train.batch_size
        seed_step(self.cfg.seed, step, ctx.dist.rank, ctx.device)  # randomness inside the model (dropout)
        idx = step_indices(order, step_in_epoch, batch_size=batch_size,
                           rank=ctx.dist.rank, world_size=ctx.dist.world_size).to(ctx.device)
        images = self.train_images[idx].float().div_(255)
        labels = self.train_labels[idx]
        if self.augment != "none":
            images = crop_flip(images, padding=crop_padding(images.shape[-1]), flip=self.augment == "crop-flip",
                               generator=generator(self.cfg.seed, step), global_batch=batch_size,
                               start=ctx.dist.rank * self.local_batch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(ctx.device, self.amp):
            logits = self.train_model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.optim.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), (logits.detach().argmax(1) == labels).sum()

    def _end_epoch(self, epoch: int, step: int, lr: float, seconds: float, bar) -> None:
        totals = torch.stack([self.running["loss_sum"], self.running["correct"].double(),
                              torch.tensor(float(self.running["seen"]), dtype=torch.float64,
                                           device=self.ctx.device)])
        if self.ctx.dist.enabled:
            torch.distributed.all_reduce(totals)
        loss_sum, correct, seen = totals.tolist()
        record = {"step": step, "epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen,
                  "train_accuracy": correct / seen,
                  "samples_per_s": seen / max(seconds, 1e-9)}
        if self.splits.val is not None:
            val = self._evaluate(self.splits.val)
            record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            self.train_model.train()
        self.ctx.run.append_metrics(record)
        summary = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in record.items() if k not in ("step", "epoch"))
        bar.line(f"epoch {epoch + 1}/{self.cfg.train.epochs}  {summary}")
        self._reset_running()

    def _reset_running(self, loss_sum: float = 0.0, correct: int = 0, seen: int = 0) -> None:
        """This epoch's running totals, kept on the device so that steps never wait for a sync."""
        device = self.ctx.device
        self.running = {"loss_sum": torch.tensor(loss_sum, dtype=torch.float64, device=device),
                        "correct": torch.tensor(correct, dtype=torch.int64, device=device), "seen": seen}

    def _checkpoint(self, step: int) -> None:
        if not self.ctx.dist.is_main:
            return
        state = {"step": step, "total_steps": self.total_steps, "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                 "running": {"loss_sum": float(self.running["loss_sum"]),
                             "correct": int(self.running["correct"]), "seen": self.running["seen"]}}
        self.ctx.run.save_checkpoint(step, self.model.state_dict(), state,
                                     keep=self.cfg.train.keep_checkpoints)

    # ------------------------------------------------------------ results

    def _evaluate(self, dataset) -> dict:
        return evaluate_classifier(self.model, dataset, batch_size=self.cfg.train.eval_batch_size,
                                   device=self.ctx.device, dist=self.ctx.dist, amp=self.amp)

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
            primary_metric=PRIMARY_METRIC, parent=f"dataset:{cfg.data.name}", relation="trained",
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
    if o.lr <= 0:
        raise ConfigError([f"optim.lr: must be positive, got {o.lr}"])
    if o.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                               weight_decay=o.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
