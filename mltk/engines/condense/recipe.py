"""``mltk condense DATASET --ipc N``: condense a dataset into a budget of IPC images per class, in stored floats.

One run, whatever the method::

    setup     real data, normalisation, the layout that fits the budget, initial synthetic set
    train     kfs: decoder warm start, then distribution matching of codes and decoders
              dm:  distribution matching of the pixels
              random, herding: nothing to train (the choice is made in setup)
    evaluate  storage accounting, final matching loss, and (eval.runs > 0) fresh ConvNets
              trained on the condensed set, scored on the real test split
    save      a ``condensed-dataset`` artifact, ``condensed-from`` the dataset

Determinism: the step's random network, real batch and DSA draw depend only on
(seed, step), and a checkpoint holds the stored tensors, the optimiser state
and the step, so a resumed run ends bit-identical (on CPU) to an uninterrupted
one. Under ``--nproc-per-node`` each rank embeds its slice of every class's
real batch and the per-class sums are gathered (see ``matching.py``).
"""

from __future__ import annotations

import time

import torch

from mltk.core.artifact import build_card, provenance
from mltk.core.catalog import register_recipe
from mltk.core.config import config_hash, to_dict
from mltk.core.errors import ConfigError, UsageError
from mltk.core.loop import StepLoop, StepOutput, StepTask
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.seeding import generator, seed_everything
from mltk.data import dataset_info, load_splits
from mltk.engines.condense.artifact import KIND, RELATION, condensed_files
from mltk.engines.condense.config import CondenseConfig
from mltk.engines.condense.dsa import SiameseAugment, parse_strategy
from mltk.engines.condense.matching import (
    RandomEmbedder,
    matching_loss,
    real_class_means,
    synthetic_class_means,
)
from mltk.engines.condense.methods import METHODS, CodeSet, PixelSet
from mltk.engines.condense.protocols import evaluate_condensed
from mltk.engines.condense.selection import class_indices, herding, random_per_class
from mltk.engines.condense.storage import StorageReport, budget_floats, kfs_layout
from mltk.nn import build_model
from mltk.nn.classifiers.fit import FitSchedule, fit_classifier

PRIMARY_METRIC = "test_accuracy"
# Purposes of the seeded generators, so no two draws of a step share a stream.
_INIT, _REAL, _AUGMENT, _WARMUP, _PAIRS = 1, 2, 3, 4, 5


@register_recipe("condense", config=CondenseConfig, default_preset="digits",
                 description="condense a dataset: KFS latent codes + shared tiny decoders, or the DM, random and "
                             "herding baselines, at equal stored floats (also `mltk condense`)")
class CondenseRecipe(StepTask):
    def __init__(self, cfg: CondenseConfig, ctx: RunContext):
        self.cfg = cfg
        self.ctx = ctx

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        seed_everything(cfg.seed)
        if cfg.match.batch_real < ctx.dist.world_size:
            raise ConfigError([f"match.batch_real: {cfg.match.batch_real} real images per class cannot split over "
                               f"{ctx.dist.world_size} ranks"], source="condense")
        self.method = METHODS[cfg.method]
        self.splits = load_splits(cfg.data)
        train = self.splits.train
        self.num_classes = train.num_classes
        self.image_shape = tuple(train.image_shape)
        self.mean, self.std = channel_stats(train.images)
        self.per_class = class_indices(train.labels, self.num_classes)
        ctx.reporter.info(f"data: {cfg.data.name}: {len(train)} train images of {self.image_shape}, "
                          f"{self.num_classes} classes, {len(self.splits.test)} test images")
        self.budget = budget_floats(cfg.ipc, self.num_classes, self.image_shape)
        self.layout = None
        if self.method.stores == "codes":
            k = cfg.kfs
            self.layout = kfs_layout(ipc=cfg.ipc, num_classes=self.num_classes, image_shape=self.image_shape,
                                     downsample=k.downsample, latent_channels=k.latent_channels,
                                     decoders=k.decoders, hidden=k.hidden, codes_per_class=k.codes_per_class)
        self._check_class_sizes()
        device = ctx.device
        self.norm_mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
        self.norm_std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
        self.train_images = train.images.to(device)
        self.augment = SiameseAugment(parse_strategy(cfg.match.dsa, flip_ok=dataset_info(cfg.data.name).flip_ok))
        self.batch_real = min(cfg.match.batch_real, min(len(i) for i in self.per_class))
        self.batch_real -= self.batch_real % ctx.dist.world_size
        if self.batch_real < cfg.match.batch_real and self.method.matches:
            ctx.reporter.warn(f"match.batch_real={cfg.match.batch_real}: the smallest class has "
                              f"{min(len(i) for i in self.per_class)} images; using {self.batch_real}")
        self.synthetic = self._initial_set()
        self.warmup_steps = self.synthetic.warmup_steps
        self.total_steps = self.warmup_steps + cfg.match.iterations if self.method.matches else 0
        self._optimizers = self.synthetic.optimizers(cfg.optim) if self.method.matches else {}
        if self.total_steps:
            net = build_model(cfg.model.arch, num_classes=self.num_classes, in_channels=self.image_shape[0],
                              image_size=self.image_shape[1], **cfg.model.options).net
            self.embedder = RandomEmbedder(net.to(device))
        self.seconds = 0.0  # condensation time: the steps alone, without checkpoints or metric lines
        self.loop = StepLoop(ctx, settings=cfg.train, seed=cfg.seed, total_steps=self.total_steps,
                             description="condense", grad_clip=cfg.optim.grad_clip)
        self.loop.restore(self)

    def _check_class_sizes(self) -> None:
        needed = self.layout.codes_per_class if self.layout else self.cfg.ipc
        smallest = min(range(self.num_classes), key=lambda c: len(self.per_class[c]))
        have = len(self.per_class[smallest])
        if have < needed:
            what = (f"{needed} codes per class (kfs.codes_per_class)" if self.layout
                    else f"ipc={self.cfg.ipc} images per class")
            raise UsageError(f"{self.cfg.data.name}: class {smallest} has {have} training images, fewer than the "
                             f"{what} that initialisation takes from real images",
                             hint="lower --ipc (or kfs.codes_per_class / raise kfs.downsample), or use more data")

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, C, H, W] -> float, standardised per channel."""
        return (images.float().div_(255) - self.norm_mean) / self.norm_std

    def _initial_set(self) -> CodeSet | PixelSet:
        """The method's synthetic set, started from real images of each class."""
        cfg, device = self.cfg, self.ctx.device
        if self.method.stores == "codes":
            codes = CodeSet(self.layout, cfg.kfs).to(device)
            chosen = random_per_class(self.per_class, self.layout.codes_per_class, seed=cfg.seed, purpose=_INIT)
            codes.start_from(self.normalize(self.train_images[chosen.flatten().to(device)]))
            return codes
        if self.method.start == "herding":
            chosen = self._herding_choice()
        else:
            chosen = random_per_class(self.per_class, cfg.ipc, seed=cfg.seed, purpose=_INIT)
        images = self.normalize(self.train_images[chosen.flatten().to(device)])
        return PixelSet(images.view(self.num_classes, cfg.ipc, *self.image_shape).clone())

    def _herding_choice(self) -> torch.Tensor:
        """IPC indices per class by herding on ConvNet features: int64 [classes, ipc]."""
        cfg, device = self.cfg, self.ctx.device
        train = self.splits.train
        seed_everything(cfg.seed)
        model = build_model(cfg.model.arch, num_classes=self.num_classes, in_channels=self.image_shape[0],
                            image_size=self.image_shape[1], mean=self.mean, std=self.std, **cfg.model.options)
        if cfg.herding.feature_epochs:
            self.ctx.reporter.info(f"herding: training the feature ConvNet for {cfg.herding.feature_epochs} "
                                   f"epochs on {len(train)} real images")
            fit_classifier(model, train.images, train.labels, FitSchedule(epochs=cfg.herding.feature_epochs),
                           seed=cfg.seed, device=device)
        model.to(device).eval()
        chosen = []
        with torch.no_grad():
            for indices in self.per_class:
                pixels = self.train_images[indices.to(device)]
                features = torch.cat([model.embed(chunk.float().div_(255)) for chunk in pixels.split(512)])
                chosen.append(indices[herding(features.cpu().double(), cfg.ipc)])
        return torch.stack(chosen)

    def stored_tensors(self) -> dict[str, torch.Tensor]:
        return self.synthetic.stored_tensors()

    # ------------------------------------------------------------ condensing (the loop's StepTask)

    def train(self) -> None:
        if self.total_steps:
            self.loop.run(self)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers

    def optimizer_at(self, step: int) -> str:
        return "warmup" if step < self.warmup_steps else "match"

    def before_step(self, step: int, bar) -> bool:
        self._step_started = time.perf_counter()
        return False

    def forward(self, step: int, module) -> StepOutput:
        if step < self.warmup_steps:
            return self._warmup_step(step)
        return self._matching_step(step - self.warmup_steps)

    def after_step(self, step: int) -> dict[str, float]:
        self.seconds += time.perf_counter() - self._step_started
        return {}

    def progress_fields(self, step: int) -> dict:
        return {"phase": "warm-up" if step < self.warmup_steps else "match",
                "floats": self.storage().stored_floats}

    def log_due(self, done: int) -> bool:
        if done <= self.warmup_steps:
            return done == self.warmup_steps
        return (done - self.warmup_steps) % self.cfg.train.log_every == 0

    def log_record(self, done: int, means: dict[str, float], lr: float | None) -> tuple[str, dict]:
        warming = done <= self.warmup_steps
        storage = self.storage()
        record = {"phase": "warm-up" if warming else "match", "loss": means["loss"],
                  "stored_floats": storage.stored_floats, "synthetic_images": storage.synthetic_images,
                  "seconds": round(self.seconds, 3), **self.synthetic.record_fields()}
        self.last_loss = means["loss"]
        if warming:
            return f"warm-up {done}/{self.warmup_steps}  reconstruction", record
        return f"iteration {done - self.warmup_steps}/{self.cfg.match.iterations}", record

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.stored_tensors().items()}

    def load_state(self, model_state: dict[str, torch.Tensor], trainer_state: dict) -> None:
        self.synthetic.load_stored(model_state)
        self.seconds = float(trainer_state.get("seconds", 0.0))
        self.last_loss = trainer_state.get("last_loss")

    def trainer_state(self) -> dict:
        return {"seconds": self.seconds, "last_loss": getattr(self, "last_loss", None)}

    def _real_batch(self, step: int) -> torch.Tensor:
        """This rank's slice of every class's real batch of ``step``, normalised: [classes, b, C, H, W]."""
        dist, count = self.ctx.dist, self.batch_real
        local = count // dist.world_size
        picks = []
        for c, indices in enumerate(self.per_class):
            order = torch.randperm(len(indices), generator=generator(self.cfg.seed, step, _REAL, c))
            picks.append(indices[order[:count]][dist.rank * local:(dist.rank + 1) * local])
        index = torch.stack(picks).flatten().to(self.ctx.device)
        return self.normalize(self.train_images[index]).view(self.num_classes, local, *self.image_shape)

    def _matching_step(self, iteration: int) -> StepOutput:
        cfg, ctx = self.cfg, self.ctx
        self.embedder.resample(cfg.seed, iteration, ctx.device)
        draw = self.augment.draw(self.num_classes, self.image_shape[1:],
                                 generator(cfg.seed, iteration, _AUGMENT))
        real_means = real_class_means(self.embedder, self._real_batch(iteration), augment=self.augment,
                                      draw=draw, batch_per_class=self.batch_real, dist=ctx.dist)
        synthetic = self.synthetic.matched_images(generator(cfg.seed, iteration, _PAIRS))
        synthetic_means = synthetic_class_means(self.embedder, synthetic, augment=self.augment, draw=draw)
        loss = matching_loss(real_means, synthetic_means)
        return StepOutput(self.synthetic.objective(loss, synthetic), {"loss": loss.detach() / self.num_classes})

    def _warmup_step(self, step: int) -> StepOutput:
        """One autoencoder step of the decoders on a random batch of real images (the same on every rank)."""
        gen = generator(self.cfg.seed, step, _WARMUP)
        count = min(len(self.train_images), self.batch_real * self.num_classes, 1024)
        index = torch.randint(0, len(self.train_images), (count,), generator=gen).to(self.ctx.device)
        return StepOutput(self.synthetic.warmup_loss(self.normalize(self.train_images[index])))

    # ------------------------------------------------------------ results

    def storage(self) -> StorageReport:
        full = len(self.splits.train) * self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        return self.synthetic.storage(budget_floats=self.budget, full_dataset_floats=full)

    def pixel_rows(self) -> list[torch.Tensor]:
        """The synthetic images of each class on the [0, 1] scale (not clipped): classes x [n, C, H, W]."""
        with torch.no_grad():
            pixels = self.synthetic.decode() * self.norm_std.unsqueeze(0) + self.norm_mean.unsqueeze(0)
        return [row.cpu() for row in pixels]

    def evaluate(self) -> dict:
        cfg = self.cfg
        matching_steps = self.total_steps - self.warmup_steps
        metrics = {**self.storage().as_dict()}
        metrics.pop("full_dataset_floats")
        if matching_steps:
            metrics["final_loss"] = getattr(self, "last_loss", None)
        metrics["condense_seconds"] = round(self.seconds, 3)
        if cfg.eval.runs > 0:
            rows = self.pixel_rows()
            images = torch.cat(rows)
            labels = torch.arange(self.num_classes).repeat_interleave(len(rows[0]))
            result = evaluate_condensed(images, labels, self.splits.test, net=cfg.model, spec=cfg.eval,
                                        mean=self.mean, std=self.std,
                                        flip_ok=dataset_info(cfg.data.name).flip_ok, seed=cfg.seed,
                                        device=self.ctx.device, dist=self.ctx.dist, reporter=self.ctx.reporter)
            metrics.update(test_accuracy=result["mean"], test_accuracy_std=result["std"],
                           eval_runs=cfg.eval.runs, eval_epochs=cfg.eval.epochs)
        return metrics

    def save(self, metrics: dict) -> ArtifactRecord:
        cfg = self.cfg
        train = self.splits.train
        parent = f"dataset:{cfg.data.name}"
        storage = self.storage()
        info = {"method": cfg.method, "ipc": cfg.ipc, "num_classes": self.num_classes,
                "image_shape": list(self.image_shape), "normalization": {"mean": self.mean, "std": self.std},
                "storage": storage.as_dict(), "net": to_dict(cfg.model), "eval": to_dict(cfg.eval),
                "tensors": {k: list(v.shape) for k, v in self.stored_tensors().items()}}
        if self.layout is not None:
            layout = self.layout
            info["layout"] = {"num_classes": layout.num_classes, "codes_per_class": layout.codes_per_class,
                              "latent_shape": list(layout.latent_shape), "image_shape": list(layout.image_shape),
                              "decoders": layout.decoders, "hidden": layout.hidden}
            info["decoder"] = {"activation": cfg.kfs.activation, "upsample": cfg.kfs.upsample,
                               "residual": cfg.kfs.residual, "floats_each": layout.floats_per_decoder}
        metadata = provenance(engine="condense", parent=parent, relation=RELATION, kind=KIND, method=cfg.method,
                              config_sha256=config_hash(cfg))
        files = condensed_files(self.stored_tensors(), self.pixel_rows(), metadata=metadata)
        card = build_card(kind=KIND, engine="condense", parameters=storage.stored_floats,
                          task={"data": to_dict(cfg.data), "class_names": list(train.class_names)},
                          condensed=info, metrics=metrics, parent=parent, relation=RELATION, config=cfg,
                          primary_metric=PRIMARY_METRIC if PRIMARY_METRIC in metrics else None,
                          run_dir=str(self.ctx.run.path))
        return self.ctx.registry.save(cfg.artifact_name(), files=files, card=card)


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images [N, C, H, W], on the [0, 1] scale."""
    x = images.float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return [round(v, 6) for v in x.mean(dim=1).tolist()], [round(v, 6) for v in x.std(dim=1).clamp_min(1e-3).tolist()]

