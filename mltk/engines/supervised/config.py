"""Configuration of the ``supervised`` recipe (train an image classifier)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from mltk.core.sections import LoopSettings, OptimizerSettings, check_values
from mltk.data.splits import DataSpec
from mltk.nn.classifiers.architectures import arch_option_problems


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    arch: str = "convnet"
    options: dict = dataclasses.field(default_factory=dict)  # architecture options: width, depth, norm, ...
    mean: list[float] | None = None  # per-channel input normalisation; None = measured on the train split
    std: list[float] | None = None

    def value_problems(self) -> list[str]:
        return arch_option_problems(self.arch, self.options)


@dataclasses.dataclass(frozen=True)
class OptimSpec(OptimizerSettings):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01  # for the global batch
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "step", "constant"] = "cosine"  # step: x0.1 at half, as DC/DM evaluation does
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0

    def value_problems(self) -> list[str]:
        return super().value_problems() + check_values(
            self, {"momentum": "fraction", "warmup_epochs": "non-negative", "label_smoothing": "fraction"})


@dataclasses.dataclass(frozen=True)
class TrainSpec(LoopSettings):
    epochs: int = 30
    batch_size: int = 64  # global: split evenly over the ranks
    eval_batch_size: int = 512
    augment: Literal["auto", "none", "crop", "crop-flip"] = "auto"  # auto: crop, plus flip where the dataset allows
    max_steps: int = 0  # stop (and end the schedule) after this many steps; 0 = train.epochs decide

    def value_problems(self) -> list[str]:
        return super().value_problems() + check_values(
            self, {"epochs": "positive", "batch_size": "positive", "eval_batch_size": "positive",
                   "max_steps": "non-negative"})


@dataclasses.dataclass(frozen=True)
class SupervisedConfig:
    name: str = ""  # artifact name; empty = <arch>-<dataset>
    seed: int = 0
    device: str = "auto"
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    model: ModelSpec = dataclasses.field(default_factory=ModelSpec)
    optim: OptimSpec = dataclasses.field(default_factory=OptimSpec)
    train: TrainSpec = dataclasses.field(default_factory=TrainSpec)
    # A classifier to fine-tune (registry reference or exported folder): its architecture, options, input
    # normalisation and every weight that fits this task; the head starts fresh when the classes differ.
    # model.arch and model.options are then not used; init_options overrides the pretrained model's options
    # (init_options.stem_stride=1 for an ImageNet MobileNet on 32 px images).
    init: str = ""
    init_options: dict = dataclasses.field(default_factory=dict)

    def artifact_name(self) -> str:
        if self.name:
            return self.name
        dataset = self.data.name.split(":")[0]
        if self.init:
            return f"{self.init.split(':')[0].rstrip('/').split('/')[-1]}-{dataset}".replace("_", "-")
        return f"{self.model.arch}-{dataset}".replace("_", "-")
