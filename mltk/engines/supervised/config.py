"""Configuration of the ``supervised`` recipe (train an image classifier)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from mltk.data.splits import DataSpec


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    arch: str = "convnet"
    options: dict = dataclasses.field(default_factory=dict)  # architecture options: width, depth, norm, ...
    mean: list[float] | None = None  # per-channel input normalisation; None = measured on the train split
    std: list[float] | None = None


@dataclasses.dataclass(frozen=True)
class OptimSpec:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01  # for the global batch
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "step", "constant"] = "cosine"  # step: x0.1 at half, as DC/DM evaluation does
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    epochs: int = 30
    batch_size: int = 64  # global: split evenly over the ranks
    eval_batch_size: int = 512
    augment: Literal["auto", "none", "crop", "crop-flip"] = "auto"  # auto: crop, plus flip where the dataset allows
    amp: Literal["auto", "on", "off"] = "auto"  # mixed precision on CUDA
    compile: bool = False  # torch.compile the model (CUDA runs of many epochs)
    max_steps: int = 0  # stop (and end the schedule) after this many steps; 0 = train.epochs decide
    ckpt_every: int = 0  # steps between checkpoints; 0 = by time, see ckpt_minutes
    ckpt_minutes: float = 5.0  # with ckpt_every 0: checkpoint when this much training is unsaved (and at the end)
    keep_checkpoints: int = 2


@dataclasses.dataclass(frozen=True)
class SupervisedConfig:
    name: str = ""  # artifact name; empty = <arch>-<dataset>
    seed: int = 0
    device: str = "auto"
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    model: ModelSpec = dataclasses.field(default_factory=ModelSpec)
    optim: OptimSpec = dataclasses.field(default_factory=OptimSpec)
    train: TrainSpec = dataclasses.field(default_factory=TrainSpec)

    def artifact_name(self) -> str:
        if self.name:
            return self.name
        dataset = self.data.name.split(":")[0]
        return f"{self.model.arch}-{dataset}".replace("_", "-")
