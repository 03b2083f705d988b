"""Training a set model on the shared step loop: ``mltk train umbc``.

One step::

    sets   = this rank's slice of the step's sets (mog: drawn from (seed, step); clouds: seeded epoch order)
    mask   = set-element dropout of the sets' elements (train.element_dropout)
    output = model(sets, mask, grad_subset=train.grad_set_size, chunk_size=train.chunk_size)
    loss   = cross-entropy (clouds) | NLL per element under the predicted mixture (mog)

With ``grad_set_size`` n > 0 the whole set is forwarded in chunks, only n random elements per set keep a
graph, and their partial sums' gradient is scaled by N/n (``SetModel.subset_gradient_encoding``): the
activation memory of the encoder no longer grows with the set size and the gradient stays unbiased.
Every random draw (sets, dropout, subsets, random slots) comes from generators seeded by (seed, step,
rank), so a resumed run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from mltk.core.errors import ConfigError
from mltk.core.loop import OneModelTask, StepLoop, StepOutput
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.seeding import generator as seeded_generator
from mltk.core.seeding import seed_everything
from mltk.data.batches import epoch_order, per_rank_batch, step_indices, steps_per_epoch
from mltk.engines.sets.artifact import set_model_artifact
from mltk.engines.sets.config import UmbcConfig
from mltk.engines.sets.data import load_point_clouds, mixture_nll, sample_mixtures
from mltk.engines.sets.evaluation import (
    class_probabilities,
    classification_scores,
    consistency_gap,
    corrupt,
    mixture_scores,
)
from mltk.engines.sets.inputs import drop_elements
from mltk.engines.sets.model import SetModel, SetModelSpec, state_mismatch


def model_spec(cfg: UmbcConfig, *, dim_in: int, classes: int) -> SetModelSpec:
    """The set model of a config: one output row of class logits, or one row per mixture component."""
    if cfg.data.is_mog:
        outputs, features = cfg.data.components, 1 + 2 * cfg.data.dims
    else:
        outputs, features = 1, classes
    return SetModelSpec(dim_in=dim_in, outputs=outputs, out_features=features, **dataclasses.asdict(cfg.model))


class SetTraining(OneModelTask):
    throughput_name = "sets_per_s"

    def __init__(self, cfg: UmbcConfig, ctx: RunContext):
        self.cfg = cfg
        self.ctx = ctx

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        seed_everything(cfg.seed)
        self.world_size = ctx.dist.world_size
        per_rank_batch(cfg.train.batch_size, self.world_size)
        if cfg.train.grad_set_size and cfg.model.kind == "set-transformer":
            raise ConfigError(["train.grad_set_size: the plain set transformer is not mini-batch consistent, "
                               "so it cannot forward a set in chunks"], hint="set train.grad_set_size=0")
        if cfg.train.grad_set_size and cfg.model.kind == "deepsets" and cfg.model.pooling in ("max", "min"):
            raise ConfigError([f"train.grad_set_size: {cfg.model.pooling} pooling is not a sum, so a subset "
                               "gradient of it is not unbiased"], hint="use model.pooling=sum or mean")
        if cfg.data.is_mog:
            self.clouds = None
            spec = model_spec(cfg, dim_in=cfg.data.dims, classes=0)
            ctx.reporter.info(f"data: mixtures of {cfg.data.components} Gaussians in {cfg.data.dims}-D, "
                              f"{cfg.data.set_size} elements per training set, fresh sets every step")
        else:
            self.clouds = load_point_clouds(cfg.data.name, points=cfg.data.points,
                                            test_fraction=cfg.data.test_fraction, seed=cfg.seed)
            if len(self.clouds.train_labels) == 0:
                raise ConfigError([f"data.name: {cfg.data.name} holds no training cloud"])
            self.steps_per_epoch = steps_per_epoch(len(self.clouds.train_labels), cfg.train.batch_size)
            spec = model_spec(cfg, dim_in=self.clouds.train_points.shape[-1], classes=len(self.clouds.class_names))
            ctx.reporter.info(f"data: {cfg.data.name}: {len(self.clouds.train_labels)} training and "
                              f"{len(self.clouds.test_labels)} held-out clouds of {self.clouds.train_points.shape[1]} "
                              f"points, {len(self.clouds.class_names)} classes")
        self.model = SetModel(spec).to(ctx.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.optim.lr,
                                          weight_decay=cfg.optim.weight_decay)
        self.loop = StepLoop(ctx, settings=cfg.train, seed=cfg.seed, total_steps=cfg.train.steps,
                             description="train", grad_clip=cfg.optim.grad_clip)
        self.loop.restore(self)

    def load_state(self, model_state: dict[str, torch.Tensor], trainer_state: dict) -> None:
        problem = state_mismatch(self.model, model_state)
        if problem:
            raise ConfigError([f"model: the checkpoint does not fit this config's model: {problem}"],
                              hint="resume with the model settings the checkpoint was written with")
        super().load_state(model_state, trainer_state)

    # ------------------------------------------------------------ the loop's StepTask

    def learning_rate(self, step: int) -> float:
        o = self.cfg.optim
        return o.lr * (0.1 if step >= int(o.decay_at * self.cfg.train.steps) else 1.0)

    def _sets(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(sets, class labels or None) of this rank at ``step``."""
        cfg, rank = self.cfg, self.ctx.dist.rank
        local = cfg.train.batch_size // self.world_size
        if self.clouds is None:  # the global batch from (seed, step), then this rank's slice
            x, _ = sample_mixtures(cfg.train.batch_size, cfg.data.set_size, seeded_generator(cfg.seed, step, 0x30C),
                                   components=cfg.data.components, dims=cfg.data.dims)
            return x[rank * local:(rank + 1) * local], None
        epoch, within = divmod(step, self.steps_per_epoch)
        order = epoch_order(len(self.clouds.train_labels), seed=cfg.seed, epoch=epoch)
        chosen = step_indices(order, within, batch_size=cfg.train.batch_size, rank=rank, world_size=self.world_size)
        return self.clouds.train_points[chosen], self.clouds.train_labels[chosen]

    def forward(self, step: int, module: torch.nn.Module) -> StepOutput:
        t = self.cfg.train
        x, labels = self._sets(step)
        x = x.to(self.ctx.device)
        mask = drop_elements(torch.ones(x.shape[:2], dtype=torch.bool, device=x.device), t.element_dropout)
        outputs = module(x, mask, grad_subset=t.grad_set_size, chunk_size=t.chunk_size)
        if labels is None:
            loss = mixture_nll(outputs, x).mean()
            return StepOutput(loss, {}, count=len(x))
        labels = labels.to(self.ctx.device)
        logits = outputs[:, 0]
        return StepOutput(F.cross_entropy(logits, labels), {"accuracy": (logits.argmax(1) == labels).float().mean()},
                          count=len(x))

    def log_due(self, done: int) -> bool:
        return done % self.cfg.train.log_every == 0

    # ------------------------------------------------------------ results

    def evaluate(self) -> dict:
        cfg, model = self.cfg, self.model.eval()
        e = cfg.eval
        metrics: dict = {}
        if self.clouds is None:
            scores = mixture_scores(model, sizes=cfg.data.test_sizes, sets=cfg.data.test_sets,
                                    components=cfg.data.components, dims=cfg.data.dims, chunk_size=e.chunk_size,
                                    seed=cfg.seed)
            metrics.update({f"test_{k}": v for k, v in scores.items()})
            metrics["test_nll"] = sum(scores[f"nll@{s}"] for s in cfg.data.test_sizes) / len(cfg.data.test_sizes)
            probe, _ = sample_mixtures(4, min(max(cfg.data.test_sizes), 256), seeded_generator(cfg.seed, 0x3BC),
                                       components=cfg.data.components, dims=cfg.data.dims)
        else:
            clouds = self.clouds
            if len(clouds.test_labels) == 0:
                return {"test_accuracy": None, "test_note": "no held-out cloud (data.test_fraction is 0)"}
            for label, points in (("", clouds.test_points), ("corrupted_", corrupt(clouds.test_points, e.corruption,
                                                                                   cfg.seed))):
                probs = class_probabilities(model, points, chunk_size=e.chunk_size)
                metrics.update({f"test_{label}{k}": v for k, v in
                                classification_scores(probs, clouds.test_labels, e.bins).items()})
                if cfg.train.element_dropout > 0:
                    probs = class_probabilities(model, points, chunk_size=e.chunk_size, seed=cfg.seed,
                                                dropout=cfg.train.element_dropout, mc_samples=e.mc_samples)
                    metrics.update({f"test_{label}mc_{k}": v for k, v in
                                    classification_scores(probs, clouds.test_labels, e.bins).items()})
            probe = clouds.test_points[:4]
        if model.spec.mbc:
            metrics["mbc_max_abs_diff"] = consistency_gap(model, probe.to(self.ctx.device), partitions=8,
                                                          generator=seeded_generator(cfg.seed, 0x3BC))
        return metrics

    def primary_metric(self) -> tuple[str, bool]:
        return ("test_nll", False) if self.clouds is None else ("test_accuracy", True)

    def save(self, metrics: dict) -> ArtifactRecord:
        cfg = self.cfg
        name, higher = self.primary_metric()
        task = ({"type": "mixture", "components": cfg.data.components, "dims": cfg.data.dims}
                if self.clouds is None else {"type": "classify", "class_names": self.clouds.class_names})
        files, card = set_model_artifact(self.model, config=cfg, metrics=metrics, primary_metric=name,
                                         higher_is_better=higher, parent=cfg.data.name, task=task,
                                         extra={"run_dir": str(self.ctx.run.path)})
        return self.ctx.registry.save(cfg.artifact_name(), files=files, card=card)
