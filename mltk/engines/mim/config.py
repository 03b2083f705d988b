"""Configuration of the masked-image-modelling recipes ``mae``, ``rc-mae`` and ``sdft``.

Defaults are the official code's (MAE / RC-MAE ``run_pretrain.py`` and the
self-distillation repo's shell scripts), scaled to whatever data the run
gets; the presets set the model size and the budget.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from mltk.core.sections import LoopSettings, OptimizerSettings, check_values
from mltk.data.splits import DataSpec
from mltk.nn.classifiers.architectures import arch_option_problems
from mltk.nn.encoders.mae import DECODER_MAXIMA


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
    width: int = 0  # 0 = the width RC-MAE pairs with the encoder size (tiny 128, small 256, base 512)
    depth: int = 0  # 0 = tiny 2, small 4, base 8 blocks
    heads: int = 0  # 0 = tiny 4, small 8, base 16

    def value_problems(self) -> list[str]:
        problems = check_values(self, {"width": "non-negative", "depth": "non-negative", "heads": "non-negative"})
        return problems + [f"{key}: must be at most {ceiling}, got {getattr(self, key)}"
                           for key, ceiling in DECODER_MAXIMA.items() if getattr(self, key) > ceiling]


def mask_ratio_problems(mask_ratio: float) -> list[str]:
    """Masking every patch leaves the encoder nothing to see, masking none leaves nothing to reconstruct."""
    return [] if 0.0 < mask_ratio < 1.0 else [f"mask_ratio: must lie strictly between 0 and 1, got {mask_ratio}"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    arch: str = "vit"  # the encoder: the model zoo's ViT
    options: dict = dataclasses.field(default_factory=dict)  # ViT options: size, patch_size, width, depth, heads, pool
    decoder: DecoderSpec = dataclasses.field(default_factory=DecoderSpec)
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True  # reconstruct each patch standardised over its own pixels
    mean: list[float] | None = None  # per-channel input normalisation; None = measured on the train split
    std: list[float] | None = None

    def value_problems(self) -> list[str]:
        return mask_ratio_problems(self.mask_ratio) + arch_option_problems(self.arch, self.options)


@dataclasses.dataclass(frozen=True)
class OptimSpec(OptimizerSettings):
    lr: float = 0.0  # for the global batch; 0 = base_lr * batch_size / 256 (MAE's scaling rule)
    base_lr: float = 1.5e-4
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.05  # not on 1-D parameters (biases, norms), as MAE
    schedule: Literal["cosine", "linear", "constant"] = "cosine"  # after the warm-up, down to min_lr
    warmup_steps: int = 0
    warmup_epochs: float = 0.0  # used when warmup_steps is 0
    min_lr: float = 0.0

    def value_problems(self) -> list[str]:
        problems = check_values(self, {"lr": "non-negative", "base_lr": "positive", "weight_decay": "non-negative",
                                       "grad_clip": "non-negative", "warmup_steps": "non-negative",
                                       "warmup_epochs": "non-negative", "min_lr": "non-negative"})
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            problems.append(f"betas: two numbers in [0, 1), got {self.betas}")
        return problems


@dataclasses.dataclass(frozen=True)
class LoopSpec(LoopSettings):
    batch_size: int = 256  # global: split evenly over the ranks
    # auto: resized-crop-flip, or resized-crop where a mirror image changes the class (digits)
    augment: Literal["auto", "resized-crop", "resized-crop-flip", "crop", "crop-flip", "none"] = "auto"
    crop_scale_min: float = 0.2  # resized-crop: the smallest fraction of the image area kept
    log_every: int = 0  # steps between metric lines; 0 = one line per epoch

    def value_problems(self) -> list[str]:
        return super().value_problems() + check_values(
            self, {"batch_size": "positive", "crop_scale_min": "fraction", "log_every": "non-negative"})


@dataclasses.dataclass(frozen=True)
class TrainSpec(LoopSpec):
    epochs: int = 100
    max_steps: int = 0  # stop (and end the schedule) after this many steps; 0 = epochs decide

    def value_problems(self) -> list[str]:
        return super().value_problems() + check_values(self, {"epochs": "positive", "max_steps": "non-negative"})


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """What ``evaluate()`` measures at the end of training (the full protocols run with ``mltk eval``)."""

    knn_train_images: int = 5000  # k-NN accuracy with this many train images as the memory; 0 = skip
    test_images: int = 0  # test images scored (k-NN and reconstruction); 0 = all
    knn_k: int = 20
    knn_temperature: float = 0.07
    batch_size: int = 256

    def value_problems(self) -> list[str]:
        return check_values(self, {"knn_train_images": "non-negative", "test_images": "non-negative",
                                   "knn_k": "positive", "knn_temperature": "positive", "batch_size": "positive"})


@dataclasses.dataclass(frozen=True)
class MAEConfig:
    name: str = ""  # artifact name; empty = <recipe>-<size>-<dataset>
    seed: int = 0
    device: str = "auto"
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    model: ModelSpec = dataclasses.field(default_factory=ModelSpec)
    optim: OptimSpec = dataclasses.field(default_factory=OptimSpec)
    train: TrainSpec = dataclasses.field(default_factory=TrainSpec)
    eval: EvalSpec = dataclasses.field(default_factory=EvalSpec)

    recipe_name = "mae"

    def artifact_name(self) -> str:
        if self.name:
            return self.name
        size = self.model.options.get("size", "tiny")
        dataset = self.data.name.split(":")[0]
        return f"{self.recipe_name}-vit-{size}-{dataset}"


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    gamma: float = 1.0  # weight of the reconstruction-consistency term; 0 = plain MAE
    momentum: float = 0.996  # EMA momentum at the first step
    momentum_end: float = 1.0  # cosine schedule: the momentum at the last step
    # cosine: momentum -> momentum_end over the run's global steps (the intended DINO-style schedule);
    # constant: `momentum` throughout, which is what the official code runs in effect (it indexes the
    # schedule with the step within the epoch, so only the first epoch's slice is ever used).
    momentum_schedule: Literal["cosine", "constant"] = "cosine"
    downstream: Literal["teacher", "student"] = "teacher"  # the weights the artifact hands to evaluation

    def value_problems(self) -> list[str]:
        return check_values(self, {"gamma": "non-negative", "momentum": "fraction", "momentum_end": "fraction"})


@dataclasses.dataclass(frozen=True)
class RCMAEConfig(MAEConfig):
    teacher: TeacherSpec = dataclasses.field(default_factory=TeacherSpec)

    recipe_name = "rc-mae"


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """Only the masking settings: the architecture is the ``init`` artifact's."""

    arch: str = "vit"
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True

    def value_problems(self) -> list[str]:
        return mask_ratio_problems(self.mask_ratio)


@dataclasses.dataclass(frozen=True)
class StagedTrainSpec(LoopSpec):
    batch_size: int = 64
    steps: int = 20000  # further pre-training (stage 1) steps
    distill_steps: int = 0  # self-distillation (stage 2) steps; 0 = the same as `steps`, as the paper runs

    def value_problems(self) -> list[str]:
        return super().value_problems() + check_values(self, {"steps": "positive", "distill_steps": "non-negative"})


@dataclasses.dataclass(frozen=True)
class DistillSpec:
    weight: float = 1.0  # lambda of ||h_student - h_teacher||^2 (sum over features, mean over the batch)

    def value_problems(self) -> list[str]:
        return check_values(self, {"weight": "non-negative"})


@dataclasses.dataclass(frozen=True)
class SDFTConfig:
    init: str = ""  # the initial MAE: an encoder artifact reference (required)
    name: str = ""  # artifact name of the self-distilled student; empty = sdft-<dataset>
    seed: int = 0
    device: str = "auto"
    adapt_images: bool = True  # resize / convert the target images to the init model's input; false = error
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    model: InputSpec = dataclasses.field(default_factory=InputSpec)
    optim: OptimSpec = dataclasses.field(default_factory=lambda: OptimSpec(
        lr=1.5e-4, weight_decay=0.01, schedule="linear"))
    train: StagedTrainSpec = dataclasses.field(default_factory=StagedTrainSpec)
    distill: DistillSpec = dataclasses.field(default_factory=DistillSpec)
    eval: EvalSpec = dataclasses.field(default_factory=EvalSpec)

    recipe_name = "sdft"

    def artifact_name(self) -> str:
        if self.name:
            return self.name
        return f"sdft-{self.data.name.split(':')[0]}".replace("_", "-")
