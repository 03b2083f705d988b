"""The step task shared by ``mae``, ``rc-mae`` and ``sdft``, run by the core step loop.

A run is a list of stages over one global step counter (``sdft`` has two: further
pre-training, then self-distillation; the others one); at a stage switch the
optimizer is built anew and the stage's module wrapped again. One step::

    images      = this rank's slice of the global batch (seeded epoch order), to float [0, 1]
    images      = random resized crop (+ flip)                 draws for the global batch, per step
    ids_shuffle = per-sample patch permutation                 one global draw per step, sliced per rank
    loss, terms = recipe.forward_loss(images, ids_shuffle)     MAE loss (+ consistency / distillation)
    loss.backward(); optimizer.step()                          by the loop; DDP averages the student's gradients
    recipe.after_step(step)                                    e.g. the EMA teacher update

Every random draw of a step derives from (seed, step), the data order from
(seed, stage, epoch), the learning rate and EMA momentum from the step alone,
and a checkpoint holds the networks, the optimizer and the step: a resumed run
ends bit-identical (on CPU) to an uninterrupted one, in either stage.
"""

from __future__ import annotations

import dataclasses

import torch

from mltk.core.config import config_hash, to_dict
from mltk.core.loop import StepLoop, StepOutput, StepTask
from mltk.core.optimization import adamw_without_decay_on_vectors
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.seeding import derive_seed, generator, seed_everything
from mltk.data.batches import epoch_order, per_rank_batch, step_indices, steps_per_epoch
from mltk.data.datasets import dataset_info
from mltk.data.images.augment import crop_flip, crop_padding
from mltk.data.images.resized_crop import random_resized_crop
from mltk.data.splits import DataSplits, load_splits
from mltk.engines.mim.encoder import encoder_artifact
from mltk.engines.mim.schedules import learning_rate
from mltk.nn.encoders.evaluation import (
    extract_features,
    knn_predict,
    reconstruction_loss,
    subset_indices,
)
from mltk.nn.encoders.mae import MaskedAutoencoder, random_permutation

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


class PretrainRecipe(StepTask):
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
        self.augment = _augment_mode(cfg.train.augment, cfg.data.name)
        self.stage_index = 0
        self.optimizer = make_optimizer(self.student, self.peak_lr, cfg.optim)
        self.loop = StepLoop(ctx, settings=cfg.train, seed=cfg.seed, total_steps=self.total_steps,
                             description=ctx.recipe, grad_clip=cfg.optim.grad_clip)
        self.loop.restore(self)
        # Datasets up to DEVICE_DATA_BYTES live on the device (one copy instead of one per step); larger
        # ones stay in host memory and each step moves its batch.
        on_device = train.images.numel() <= DEVICE_DATA_BYTES
        self.train_images = train.images.to(ctx.device) if on_device else train.images
        self._order_key, self._order = None, None
        self._term_keys = {"loss"}  # the loss terms a metric line prefixes with train_

    # ------------------------------------------------------------ training (the loop's StepTask)

    def train(self) -> None:
        self.loop.run(self)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"student": self.optimizer}

    def load_state(self, model_state: dict[str, torch.Tensor], trainer_state: dict) -> None:
        stage = int(trainer_state.get("stage", 0))
        if stage > 0:
            self.stage_index = stage
            self.enter_stage(stage)
            self.optimizer = make_optimizer(self.student, self.peak_lr, self.cfg.optim)
        self.load_model_state(model_state)

    def trainer_state(self) -> dict:
        return {"stage": self.stage_index}

    def _stage_of(self, step: int) -> int:
        return next(i for i, s in enumerate(self.stages) if s.start <= step < s.stop)

    def before_step(self, step: int, bar) -> bool:
        index = self._stage_of(step)
        if index == self.stage_index:
            return False
        self.stage_index = index
        self.enter_stage(index)
        self.optimizer = make_optimizer(self.student, self.peak_lr, self.cfg.optim)
        bar.line(f"stage {index + 1}/{len(self.stages)}: {self.stages[index].name} "
                 f"({self.stages[index].steps} steps)")
        return True  # a new optimizer (and scaler), and the stage's module to wrap

    def learning_rate(self, step: int) -> float:
        stage = self.stages[self.stage_index]
        return learning_rate(step - stage.start, total_steps=stage.steps, warmup_steps=self._warmup_steps(),
                             peak=self.peak_lr, minimum=self.cfg.optim.min_lr, schedule=self.cfg.optim.schedule)

    def forward(self, step: int, module: torch.nn.Module) -> StepOutput:
        cfg, ctx = self.cfg, self.ctx
        batch_size = cfg.train.batch_size
        local = step - self.stages[self.stage_index].start
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
        self.train_module = module  # what the recipes' forward_loss runs
        loss, terms = self.forward_loss(images, ids_shuffle, step)
        self._term_keys.update(terms)
        return StepOutput(loss, {k: v.detach() for k, v in terms.items()}, count=len(images))

    def log_due(self, done: int) -> bool:
        stage = self.stages[self.stage_index]
        every = self.cfg.train.log_every or self.steps_per_epoch
        local_done = done - stage.start
        return local_done % every == 0 or done == stage.stop

    def checkpoint_due(self, done: int) -> bool:
        return done == self.stages[self.stage_index].stop  # the end of every stage

    def log_record(self, done: int, means: dict[str, float], lr: float | None) -> tuple[str, dict]:
        stage = self.stages[self.stage_index]
        record = {"stage": stage.name} if len(self.stages) > 1 else {}
        record.update(epoch=round((done - stage.start) / self.steps_per_epoch, 3), lr=lr,
                      **{f"train_{k}": v for k, v in means.items() if k in self._term_keys},
                      **{k: v for k, v in means.items() if k not in self._term_keys})
        prefix = f"{stage.name} " if len(self.stages) > 1 else ""
        return f"{prefix}step {done}/{self.total_steps}  epoch {record['epoch']}", record

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
                                                         device=device)}
        if cfg.eval.knn_train_images > 0:
            train = self.splits.train
            memory = subset_indices(len(train), cfg.eval.knn_train_images, cfg.seed)
            was_training = model.training
            model.eval()
            train_features = extract_features(model.features, train.images[memory], batch_size=cfg.eval.batch_size,
                                              device=device)
            test_features = extract_features(model.features, test.images[chosen], batch_size=cfg.eval.batch_size,
                                             device=device)
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
    return adamw_without_decay_on_vectors(model.parameters(), lr=lr, weight_decay=optim.weight_decay,
                                          betas=tuple(optim.betas))


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images [N, C, H, W] on the [0, 1] scale."""
    x = images.float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    std = x.std(dim=1).clamp_min(1e-3)
    return [round(v, 6) for v in x.mean(dim=1).tolist()], [round(v, 6) for v in std.tolist()]


def _augment_mode(augment: str, dataset: str) -> str:
    if augment != "auto":
        return augment
    return "resized-crop-flip" if dataset_info(dataset).flip_ok else "resized-crop"
