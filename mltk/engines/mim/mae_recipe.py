"""``mltk train mae``: masked auto-encoder pre-training (He et al. 2021), the baseline of RC-MAE.

One step (see training.py for the frame)::

    pred = decoder(encoder(visible patches))          the first 25% of each sample's permutation
    loss = mean over masked patches of mean_j (pred - norm_pix(patch))^2

The artifact is an encoder (``kind: encoder``): evaluate it with
``mltk eval REF --protocol linear-probe | knn | finetune``.
"""

from __future__ import annotations

import dataclasses

import torch

from mltk.core.catalog import register_recipe
from mltk.core.errors import ConfigError
from mltk.core.registry import ArtifactRecord
from mltk.data.images.dataset import ImageDataset
from mltk.engines.mim.config import MAEConfig
from mltk.engines.mim.encoder import WEIGHTS_FILE, load_strict
from mltk.engines.mim.training import PretrainRecipe, Stage, channel_stats
from mltk.nn.encoders.mae import MaskedAutoencoder, build_mae


def build_student(cfg: MAEConfig, train: ImageDataset) -> MaskedAutoencoder:
    """The MAE the config describes, for the images of ``train``; ConfigError naming the config keys."""
    model = cfg.model
    if model.arch != "vit":
        raise ConfigError([f"model.arch: the masked-image recipes train a 'vit', got {model.arch!r}"])
    channels, size, _ = train.image_shape
    mean, std = model.mean, model.std
    if mean is None or std is None:
        measured_mean, measured_std = channel_stats(train.images)
        mean = mean if mean is not None else measured_mean
        std = std if std is not None else measured_std
    spec = {"arch": "mae", "encoder": {"arch": "vit", "args": {"in_channels": channels, "image_size": size,
                                                              **model.options}},
            "decoder": dataclasses.asdict(model.decoder), "mask_ratio": model.mask_ratio,
            "norm_pix_loss": model.norm_pix_loss, "mean": mean, "std": std}
    return build_mae(spec)


def single_stage(cfg, steps_per_epoch: int) -> list[Stage]:
    """One pre-training stage of train.epochs epochs (or train.max_steps steps, if fewer)."""
    total = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps)
    return [Stage("pretrain", 0, total)]


@register_recipe("mae", config=MAEConfig, default_preset="digits",
                 description="masked auto-encoder pre-training of a ViT (He et al. 2021); the RC-MAE baseline")
class MAERecipe(PretrainRecipe):
    def build(self) -> None:
        self.student = build_student(self.cfg, self.splits.train).to(self.ctx.device)

    def plan(self) -> list[Stage]:
        return single_stage(self.cfg, self.steps_per_epoch)

    def forward_loss(self, images: torch.Tensor, ids_shuffle: torch.Tensor, step: int):
        return self.train_module(images, ids_shuffle).loss, {}

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.student.state_dict()

    def load_model_state(self, tensors: dict[str, torch.Tensor]) -> None:
        load_strict(self.student, tensors, "checkpoint")

    def downstream(self) -> MaskedAutoencoder:
        return self.student

    def save(self, metrics: dict) -> ArtifactRecord:
        return self.save_encoder(self.cfg.artifact_name(), {WEIGHTS_FILE: ("model", self.student)},
                                 metrics=metrics, parent=f"dataset:{self.cfg.data.name}", relation="trained")
