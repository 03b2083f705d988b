"""``mltk train sdft init=<MAE artifact> data=<target>``: self-distillation for further
pre-training (Lee et al., ICLR 2023, arXiv 2210.02871), both stages in one resumable run.

Following the official ``trainer.py`` (``PreTrainer``, then ``SelfPreTrainer``)::

    stage 1 (further pre-training):  theta_T <- MAE training of theta_0 on the target images (labels unused)
    stage 2 (self-distillation):     theta_S <- theta_0 again (NOT theta_T), trained with
        loss = mae(theta_S; x, fresh mask) + weight * mean_b || h_S(x_b) - sg(h_T(x_b)) ||^2
        h = the encoder's final-LayerNorm [CLS] feature of the WHOLE, unmasked image (every patch)

The squared distance sums over the feature dimension and averages over the
batch (the official code's two ``backward()`` calls, weight 1). The student
artifact (relation ``distilled``) and the stage-1 teacher (its own artifact,
``<name>-teacher``, relation ``further-pretrained``) both record the initial
model as their parent, and their distance from it. The official code works on
Hugging Face's ViT-MAE at 224 px; here the ViT is mltk's, and target images
are resized (and grey turned to RGB) to the initial model's input when their
shape differs (``adapt_images``) — our addition, to carry e.g. a CIFAR model to digits.
"""

from __future__ import annotations

import torch
from torch import nn

from mltk.core.catalog import register_recipe
from mltk.core.errors import ConfigError
from mltk.core.registry import ArtifactRecord
from mltk.data.images.fit_images import fit_dataset
from mltk.data.splits import DataSplits, load_splits
from mltk.engines.mim.config import SDFTConfig
from mltk.engines.mim.encoder import WEIGHTS_FILE, load_mae, load_strict
from mltk.engines.mim.training import PretrainRecipe, Stage
from mltk.nn.encoders.mae import MaskedAutoencoder, build_mae, ema_copy


class FullViewStudent(nn.Module):
    """The self-distillation student in one forward, so DDP sees one graph.

    forward(x, ids_shuffle) -> (MAEOutput of the masked view, features [B, D] of the whole image).
    """

    def __init__(self, mae: MaskedAutoencoder):
        super().__init__()
        self.mae = mae

    def forward(self, images: torch.Tensor, ids_shuffle: torch.Tensor):
        return self.mae(images, ids_shuffle), self.mae.features(images)


def feature_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mean over the batch of the squared L2 distance: [B, D], [B, D] -> 0-d (the teacher detached)."""
    return (student - teacher.detach()).pow(2).sum(dim=1).mean()


def encoder_distance(model: MaskedAutoencoder, reference: MaskedAutoencoder) -> float:
    """L2 norm of the difference of the encoders' parameters (what downstream tasks use)."""
    total = torch.zeros((), dtype=torch.float64)
    for a, b in zip(model.encoder.parameters(), reference.encoder.parameters(), strict=True):
        total += (a.detach().double().cpu() - b.detach().double().cpu()).pow(2).sum()
    return float(total.sqrt())


@register_recipe("sdft", config=SDFTConfig, default_preset="digits",
                 description="further pre-train an MAE on target data, then self-distil it (arXiv 2210.02871)")
class SelfDistillRecipe(PretrainRecipe):
    def load_data(self) -> DataSplits:
        cfg = self.cfg
        problems = []
        if not cfg.init:
            problems.append("init: required: the MAE to start from, e.g. init=mae-vit-tiny-cifar10 "
                            "(an artifact of `mltk train mae` or `mltk train rc-mae`)")
        if cfg.model.arch != "vit":
            problems.append(f"model.arch: sdft trains the init artifact's ViT, got {cfg.model.arch!r}")
        if problems:
            raise ConfigError(problems)
        self.init = load_mae(cfg.init)
        splits = load_splits(cfg.data)
        channels, size = self.init.in_channels, self.init.image_size
        shape = splits.train.image_shape
        self.source_shape = shape
        if shape != (channels, size, size):
            if not cfg.adapt_images:
                raise ConfigError([f"data: {cfg.data.name} has {shape[0]}x{shape[1]}x{shape[2]} images, the init "
                                   f"model {self.init.source} takes {channels}x{size}x{size}"],
                                  hint="set adapt_images=true to resize them, or pick a matching init")
            self.ctx.reporter.info(f"fitting {cfg.data.name} images {shape} to the init model's input "
                                   f"{(channels, size, size)}")
            splits = DataSplits(train=fit_dataset(splits.train, channels=channels, size=size),
                                val=fit_dataset(splits.val, channels=channels, size=size) if splits.val else None,
                                test=fit_dataset(splits.test, channels=channels, size=size))
        return splits

    def _fresh_initial(self) -> MaskedAutoencoder:
        """A trainable copy of theta_0 with this run's masking settings."""
        spec = dict(self.init.mae.spec, mask_ratio=self.cfg.model.mask_ratio,
                    norm_pix_loss=self.cfg.model.norm_pix_loss)
        model = build_mae(spec)
        model.load_state_dict(self.init.mae.state_dict())
        return model.to(self.ctx.device)

    def build(self) -> None:
        self.initial = ema_copy(self._fresh_initial())  # frozen theta_0: distances and the stage-2 restart
        self.student = self._fresh_initial()
        self.teacher: MaskedAutoencoder | None = None

    def plan(self) -> list[Stage]:
        steps = self.cfg.train.steps
        distill = self.cfg.train.distill_steps or steps
        return [Stage("further-pretrain", 0, steps), Stage("self-distill", steps, distill)]

    def enter_stage(self, index: int) -> None:
        """Stage 2: the further-pre-trained network becomes the frozen teacher; the student restarts from theta_0."""
        self.teacher = ema_copy(self.student)
        self.student = self._fresh_initial()

    def forward_module(self) -> nn.Module:
        return self.student if self.stage_index == 0 else FullViewStudent(self.student)

    def forward_loss(self, images: torch.Tensor, ids_shuffle: torch.Tensor, step: int):
        if self.stage_index == 0:
            return self.train_module(images, ids_shuffle).loss, {}
        out, student_features = self.train_module(images, ids_shuffle)
        with torch.no_grad():
            teacher_features = self.teacher.features(images)
        distill = feature_distance(student_features, teacher_features)
        return out.loss + self.cfg.distill.weight * distill, {"mae": out.loss, "distill": distill}

    def model_state(self) -> dict[str, torch.Tensor]:
        state = {f"student.{k}": v for k, v in self.student.state_dict().items()}
        if self.teacher is not None:
            state.update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
        return state

    def load_model_state(self, tensors: dict[str, torch.Tensor]) -> None:
        pairs = [("student.", self.student)] + ([("teacher.", self.teacher)] if self.teacher is not None else [])
        for prefix, module in pairs:
            load_strict(module, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                        f"checkpoint ({prefix.rstrip('.')})")

    def downstream(self) -> MaskedAutoencoder:
        return self.student

    def extra_metrics(self) -> dict:
        """The teacher's and the initial model's scores on the same target split, and the distances."""
        metrics = {"student_distance_from_init": encoder_distance(self.student, self.initial),
                   "teacher_distance_from_init": encoder_distance(self.teacher, self.initial)}
        for role, model in (("teacher", self.teacher), ("init", self.initial)):
            metrics.update({f"{role}_{k}": v for k, v in self.score(model).items()})
        return metrics

    def save(self, metrics: dict) -> ArtifactRecord:
        name = self.cfg.artifact_name()
        init_ref = self.init.source
        extra = {"init": init_ref, "data_image_shape": list(self.source_shape),
                 "images_fitted_to": [self.init.in_channels, self.init.image_size, self.init.image_size]}
        teacher_metrics = {k[len("teacher_"):]: v for k, v in metrics.items()
                           if k.startswith("teacher_") and k != "teacher_distance_from_init"}
        teacher_metrics["distance_from_init"] = metrics["teacher_distance_from_init"]
        teacher = self.save_encoder(f"{name}-teacher", {WEIGHTS_FILE: ("model", self.teacher)},
                                    metrics=teacher_metrics, parent=init_ref, relation="further-pretrained",
                                    extra=extra)
        return self.save_encoder(name, {WEIGHTS_FILE: ("model", self.student)}, metrics=metrics, parent=init_ref,
                                 relation="distilled", extra={**extra, "teacher": teacher.ref})

