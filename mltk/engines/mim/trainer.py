"""The training frame shared by ``mae``, ``rc-mae`` and ``sdft``.

A run is a list of stages over one global step counter (``sdft`` has two: further
pre-training, then self-distillation; the others one). One step::

    images      = this rank's slice of the global batch (seeded epoch order), to float [0, 1]
    images      = random resized crop (+ flip)                 draws for the global batch, per step
    ids_shuffle = per-sample patch permutation                 one global draw per step, sliced per rank
    loss, terms = recipe.forward_loss(images, ids_shuffle)     MAE loss (+ consistency / distillation)
    loss.backward(); optimizer.step()                          DDP averages the student's gradients
    recipe.after_step(step)                                    e.g. the EMA teacher update

Every random draw of a step derives from (seed, step), the data order from
(seed, stage, epoch), the learning rate and EMA momentum from the step alone,
and a checkpoint holds the networks, the optimizer and the step: a resumed run
ends bit-identical (on CPU) to an uninterrupted one, in either stage.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch.nn.parallel import DistributedDataParallel

from mltk.core.config import config_hash, to_dict
from mltk.core.device import amp_dtype, autocast
from mltk.core.errors import ConfigError
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.runs import checkpoint_due
from mltk.core.seeding import derive_seed, generator, seed_everything, seed_step
from mltk.data.augment import crop_flip, crop_padding
from mltk.data.batches import epoch_order, per_rank_batch, step_indices, steps_per_epoch
from mltk.data.catalog import dataset_info
from mltk.data.resized_crop import random_resized_crop
from mltk.data.splits import DataSplits, load_splits
from mltk.engines.mim.encoder import encoder_artifact
from mltk.engines.mim.features import (
    extract_features,
    knn_predict,
    reconstruction_loss,
    subset_indices,
)
from mltk.engines.mim.schedules import learning_rate
from mltk.nn.mae import MaskedAutoencoder, random_permutation

ENGINE = "mim"
AUGMENT_STREAM, MASK_STREAM = 1, 2  # independent generators of one step
DEVICE_DATA_BYTES = 4 << 30  # uint8 training sets up to 4 GiB are copied to the device once


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    start: int  # first global step
    steps: int

    @property
    def stop(self) -> int:
        return self.start + self.steps


class PretrainRecipe:
    """Base of the MIM recipes. Subclasses build the networks and define the loss.

    Hooks: ``build()`` (networks of the first stage; ``self.student`` is what the
    optimizer trains), ``plan() -> [Stage]``, ``enter_stage(i)`` (later stages),
    ``forward_module()`` (the module DDP wraps), ``forward_loss(images, ids, step)``,
    ``after_step(step) -> {name: float}``, ``model_state()`` / ``load_model_state()``,
    ``downstream()`` (the network evaluation scores) and ``save(metrics)``.
    """

    def __init__(self, cfg, ctx: RunContext):
        self.cfg = cfg
        self.ctx = ctx

    # ------------------------------------------------------------ hooks with defaults

    def enter_stage(self, index: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} has one stage")

    def forward_module(self) -> torch.nn.Module:
        return self.student

    def after_step(self, step: int) -> dict[str, float]:
        return {}

    def extra_metrics(self) -> dict:
        return {}

    def load_data(self) -> DataSplits:
        return load_splits(self.cfg.data)

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        seed_everything(cfg.seed)
        self.splits = self.load_data()
        train = self.splits.train
        ctx.reporter.info(f"data: {cfg.data.name}: {len(train)} train, {len(self.splits.test)} test images of "
                          f"{tuple(train.image_shape)}")
        self.local_batch = per_rank_batch(cfg.train.batch_size, ctx.dist.world_size)
        self.steps_per_epoch = steps_per_epoch(len(train), cfg.train.batch_size)
        self.build()
        self.stages = self.plan()
        self.total_steps = self.stages[-1].stop
        self.peak_lr = cfg.optim.lr or cfg.optim.base_lr * cfg.train.batch_size / 256
        _check_optim(cfg.optim, self.peak_lr)
        self.amp = amp_dtype(ctx.device, cfg.train.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.augment = _augment_mode(cfg.train.augment, cfg.data.name)
        self.stage_index = 0
        self.start_step = 0
        self.optimizer = make_optimizer(self.student, self.peak_lr, cfg.optim)
        self._reset_running()
        if ctx.resume_from is not None:
            self._restore(ctx.resume_from)
        self._wrap()
        # Datasets up to DEVICE_DATA_BYTES live on the device (one copy instead of one per step); larger
        # ones stay in host memory and each step moves its batch.
        on_device = train.images.numel() <= DEVICE_DATA_BYTES
        self.train_images = train.images.to(ctx.device) if on_device else train.images
        self._order_key, self._order = None, None

    def _wrap(self) -> None:
        module = self.forward_module()
        if self.ctx.dist.enabled:
            module = DistributedDataParallel(
                module, device_ids=[self.ctx.device.index] if self.ctx.device.type == "cuda" else None)
        if self.cfg.train.compile:
            module = torch.compile(module)
        self.train_module = module

    def _restore(self, ckpt) -> None:
        state = ckpt.load_trainer_state()
        if int(state.get("stage", 0)) > 0:
            self.stage_index = int(state["stage"])
            self.enter_stage(self.stage_index)
            self.optimizer = make_optimizer(self.student, self.peak_lr, self.cfg.optim)
        self.load_model_state(ckpt.load_model_state())
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
        ctx = self.ctx
        with ctx.reporter.progress(self.total_steps, start=self.start_step, description=ctx.recipe) as bar:
            block_started = last_checkpoint = time.perf_counter()
            for step in range(self.start_step, self.total_steps):
                ctx.stop_if_asked(step, self.total_steps, self._checkpoint)
                index = next(i for i, s in enumerate(self.stages) if s.start <= step < s.stop)
                if index != self.stage_index:
                    self._switch_stage(index)
                stage = self.stages[index]
                local = step - stage.start
                lr = learning_rate(local, total_steps=stage.steps, warmup_steps=self._warmup_steps(),
                                   peak=self.peak_lr, minimum=self.cfg.optim.min_lr,
                                   schedule=self.cfg.optim.schedule)
                terms, extra = self._step(step, local, lr)
                for key, value in terms.items():
                    self.running["sums"][key] = self.running["sums"].get(key, 0.0) + value.double()
                self.running["steps"] += 1
                done = step + 1
                if bar.wants_update():  # reading a loss syncs a GPU: only as often as the bar redraws
                    bar.update(done, lr=lr, loss=float(terms["loss"]))
                if self._log_due(local + 1, stage):
                    self._log(done, stage, local + 1, lr, extra, time.perf_counter() - block_started, bar)
                    block_started = time.perf_counter()
                if checkpoint_due(done, stage.stop, every_steps=self.cfg.train.ckpt_every,
                                  every_minutes=self.cfg.train.ckpt_minutes, last_saved=last_checkpoint):
                    self._checkpoint(done)
                    last_checkpoint = time.perf_counter()
            bar.update(self.total_steps)

    def _switch_stage(self, index: int) -> None:
        self.stage_index = index
        self.enter_stage(index)
        self.optimizer = make_optimizer(self.student, self.peak_lr, self.cfg.optim)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self._reset_running()
        self._wrap()
        self.ctx.reporter.info(f"stage {index + 1}/{len(self.stages)}: {self.stages[index].name} "
                               f"({self.stages[index].steps} steps)")

    def _step(self, step: int, local: int, lr: float) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        cfg, ctx = self.cfg, self.ctx
        batch_size = cfg.train.batch_size
        seed_step(cfg.seed, step, ctx.dist.rank, ctx.device)  # randomness inside the model
        epoch, in_epoch = divmod(local, self.steps_per_epoch)
        if self._order_key != (self.stage_index, epoch):
            seed = cfg.seed if self.stage_index == 0 else derive_seed(cfg.seed, self.stage_index)
            self._order = epoch_order(len(self.train_images), seed=seed, epoch=epoch)
            self._order_key = (self.stage_index, epoch)
        idx = step_indices(self._order, in_epoch, batch_size=batch_size, rank=ctx.dist.rank,
                           world_size=ctx.dist.world_size).to(self.train_images.device)
        batch = self.train_images[idx].to(ctx.device, non_blocking=True)
        images = self.augment_batch(batch.float().div_(255), step)
        rows = slice(ctx.dist.rank * self.local_batch, (ctx.dist.rank + 1) * self.local_batch)
        ids_shuffle = random_permutation(batch_size, self.student.num_patches,
                                         generator=generator(cfg.seed, step, MASK_STREAM))[rows].to(ctx.device)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(ctx.device, self.amp):
            loss, terms = self.forward_loss(images, ids_shuffle, step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        extra = self.after_step(step)
        return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}, extra

    def augment_batch(self, images: torch.Tensor, step: int) -> torch.Tensor:
        """Augment float images [B, C, S, S] (this rank's rows of the global batch) for ``step``."""
        if self.augment == "none":
            return images
        train = self.cfg.train
        draws = generator(self.cfg.seed, step, AUGMENT_STREAM)
        start = self.ctx.dist.rank * self.local_batch
        flip = self.augment.endswith("-flip")
        if self.augment.startswith("resized-crop"):
            return random_resized_crop(images, scale=(train.crop_scale_min, 1.0), flip=flip, generator=draws,
                                       global_batch=train.batch_size, start=start)
        return crop_flip(images, padding=crop_padding(images.shape[-1]), flip=flip, generator=draws,
                         global_batch=train.batch_size, start=start)

    def _warmup_steps(self) -> int:
        optim = self.cfg.optim
        return optim.warmup_steps or int(optim.warmup_epochs * self.steps_per_epoch)

    def _log_due(self, local_done: int, stage: Stage) -> bool:
        every = self.cfg.train.log_every or self.steps_per_epoch
        return local_done % every == 0 or local_done == stage.steps

    def _log(self, done: int, stage: Stage, local_done: int, lr: float, extra: dict, seconds: float, bar) -> None:
        names = sorted(self.running["sums"])
        totals = torch.stack([self.running["sums"][k] for k in names]
                             + [torch.tensor(float(self.running["steps"]), dtype=torch.float64,
                                             device=self.ctx.device)])
        if self.ctx.dist.enabled:
            torch.distributed.all_reduce(totals)
        *sums, steps = totals.tolist()
        record = {"step": done}
        if len(self.stages) > 1:
            record["stage"] = stage.name
        record.update(epoch=round(local_done / self.steps_per_epoch, 3), lr=lr,
                      **{f"train_{k}": s / steps for k, s in zip(names, sums, strict=True)}, **extra,
                      samples_per_s=self.running["steps"] * self.cfg.train.batch_size / max(seconds, 1e-9))
        self.ctx.run.append_metrics(record)
        shown = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in record.items() if k not in ("step", "stage"))
        prefix = f"{stage.name} " if len(self.stages) > 1 else ""
        bar.line(f"{prefix}step {done}/{self.total_steps}  {shown}")
        self._reset_running()

    def _reset_running(self, steps: int = 0, sums: dict | None = None) -> None:
        """Loss sums since the last metric line, kept on the device so that steps never wait for a sync."""
        device = self.ctx.device
        self.running = {"steps": steps, "sums": {k: torch.tensor(v, dtype=torch.float64, device=device)
                                                 for k, v in (sums or {}).items()}}

    def _checkpoint(self, step: int) -> None:
        if not self.ctx.dist.is_main:
            return
        state = {"step": step, "stage": self.stage_index, "total_steps": self.total_steps,
                 "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                 "running": {"steps": self.running["steps"],
                             "sums": {k: float(v) for k, v in self.running["sums"].items()}}}
        self.ctx.run.save_checkpoint(step, self.model_state(), state, keep=self.cfg.train.keep_checkpoints)

    # ------------------------------------------------------------ results

    def evaluate(self) -> dict:
        """Scores of the downstream network (see ``score``), the images they used, and recipe extras."""
        cfg = self.cfg
        metrics = self.score(self.downstream())
        metrics["test_images"] = len(subset_indices(len(self.splits.test), cfg.eval.test_images, cfg.seed))
        if cfg.eval.knn_train_images > 0:
            metrics["knn_train_images"] = len(subset_indices(len(self.splits.train), cfg.eval.knn_train_images,
                                                             cfg.seed))
        metrics["steps"] = self.total_steps
        metrics.update(self.extra_metrics())
        return metrics

    def score(self, model: MaskedAutoencoder) -> dict:
        """Held-out masked reconstruction error and k-NN accuracy (train subset as memory) of ``model``."""
        cfg, device = self.cfg, self.ctx.device
        test = self.splits.test
        chosen = subset_indices(len(test), cfg.eval.test_images, cfg.seed)
        scores = {"test_recon_loss": reconstruction_loss(model, test.images[chosen], batch_size=cfg.eval.batch_size,
                                                         device=device, amp=self.amp)}
        if cfg.eval.knn_train_images > 0:
            train = self.splits.train
            memory = subset_indices(len(train), cfg.eval.knn_train_images, cfg.seed)
            was_training = model.training
            model.eval()
            train_features = extract_features(model.features, train.images[memory], batch_size=cfg.eval.batch_size,
                                              device=device, amp=self.amp)
            test_features = extract_features(model.features, test.images[chosen], batch_size=cfg.eval.batch_size,
                                             device=device, amp=self.amp)
            model.train(was_training)
            predicted = knn_predict(train_features, train.labels[memory], test_features,
                                    num_classes=train.num_classes, k=cfg.eval.knn_k,
                                    temperature=cfg.eval.knn_temperature)
            scores["knn_accuracy"] = float((predicted == test.labels[chosen]).double().mean())
        return scores

    def primary_metric(self) -> tuple[str, bool]:
        """(name, higher is better) of the metric ``@best`` ranks by."""
        return ("knn_accuracy", True) if self.cfg.eval.knn_train_images > 0 else ("test_recon_loss", False)

    def save_encoder(self, name: str, networks: dict[str, tuple[str, MaskedAutoencoder]], *, metrics: dict,
                     parent: str, relation: str, extra: dict | None = None) -> ArtifactRecord:
        cfg = self.cfg
        primary, higher = self.primary_metric()
        files, card = encoder_artifact(
            networks, engine=ENGINE, recipe=self.ctx.recipe, data=dataclasses.asdict(cfg.data),
            class_names=self.splits.train.class_names, config=to_dict(cfg), config_sha256=config_hash(cfg),
            metrics=metrics, primary_metric=primary, higher_is_better=higher, parent=parent, relation=relation,
            extra={"run_dir": str(self.ctx.run.path), **(extra or {})})
        return self.ctx.registry.save(name, files=files, card=card)


def make_optimizer(model: torch.nn.Module, lr: float, optim) -> torch.optim.AdamW:
    """AdamW without weight decay on 1-D parameters (biases, norms), as MAE's ``add_weight_decay``."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": optim.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=tuple(optim.betas))


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images [N, C, H, W] on the [0, 1] scale."""
    x = images.float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    std = x.std(dim=1).clamp_min(1e-3)
    return [round(v, 6) for v in x.mean(dim=1).tolist()], [round(v, 6) for v in std.tolist()]


def _check_optim(optim, peak_lr: float) -> None:
    problems = []
    if peak_lr <= 0:
        problems.append(f"optim.lr / optim.base_lr: the learning rate must be positive, got {peak_lr}")
    if len(optim.betas) != 2 or not all(0 <= b < 1 for b in optim.betas):
        problems.append(f"optim.betas: two numbers in [0, 1), got {optim.betas}")
    if optim.min_lr < 0:
        problems.append(f"optim.min_lr: must not be negative, got {optim.min_lr}")
    if problems:
        raise ConfigError(problems)


def _augment_mode(augment: str, dataset: str) -> str:
    if augment != "auto":
        return augment
    return "resized-crop-flip" if dataset_info(dataset).flip_ok else "resized-crop"
