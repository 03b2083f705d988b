"""Configuration of ``mltk condense`` (the ``condense`` recipe): method, budget, matching, optimisers, KFS layout,
evaluation.

Every value has the paper's (or the DM reference's) meaning; where KFS's own
choice could not be read from the paper, the default is our interpretation
and the comment says so.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from mltk.core.sections import LoopSettings, OptimizerSettings, check_values
from mltk.data.splits import DataSpec
from mltk.nn.classifiers.architectures import arch_option_problems

METHODS = ("kfs", "dm", "random", "herding")


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """The ConvNet that matching samples at random each iteration, and that evaluation trains afresh."""

    arch: str = "convnet"
    options: dict = dataclasses.field(default_factory=dict)  # width, depth, norm, pooling

    def value_problems(self) -> list[str]:
        return arch_option_problems(self.arch, self.options)


@dataclasses.dataclass(frozen=True)
class MatchSpec:
    """Distribution matching (DM): iterations, the real batch per class, DSA."""

    iterations: int = 1000
    batch_real: int = 256  # real images per class per iteration (split over ranks)
    dsa: str = "auto"  # strategy, e.g. color_crop_cutout_flip_scale_rotate; auto drops flip for digits; none

    def value_problems(self) -> list[str]:
        return check_values(self, {"iterations": "non-negative", "batch_real": "positive"})


@dataclasses.dataclass(frozen=True)
class CondenseOptimSpec(OptimizerSettings):
    """kfs steps its codes and decoders with Adam (the decoders alone during the warm start); dm steps its
    pixels with SGD, as the DM reference. weight_decay and grad_clip apply to every one of these optimisers."""

    lr: float = 0.01  # kfs: the latent codes
    lr_decoders: float = 0.001  # kfs: the decoders, while matching
    warmup_lr: float = 0.01  # kfs: the decoders' autoencoder warm start
    lr_images: float = 1.0  # dm: the images (normalised space)
    momentum: float = 0.5  # dm

    def value_problems(self) -> list[str]:
        return super().value_problems() + check_values(
            self, {"lr_decoders": "positive", "warmup_lr": "positive", "lr_images": "positive",
                   "momentum": "fraction"})


@dataclasses.dataclass(frozen=True)
class CondenseTrainSpec(LoopSettings):
    """The shared loop's settings; a step is one warm-up or matching iteration."""

    amp: Literal["auto", "on", "off"] = "off"  # matching runs in float32 unless asked
    log_every: int = 50  # matching iterations per progress line and metrics.jsonl record (and one after the warm-up)

    def value_problems(self) -> list[str]:
        return super().value_problems() + check_values(self, {"log_every": "positive"})


@dataclasses.dataclass(frozen=True)
class KfsSpec:
    """Latent codes per class and tiny decoders shared by every class (our interpretation of KFS's sizes)."""

    downsample: int = 2  # latent side = image side / downsample
    latent_channels: int = 0  # 0 = the image's channels (codes start as down-sampled real images)
    decoders: int = 4
    hidden: int = 2  # channels inside a decoder: upsample -> conv3x3 -> activation -> conv3x3
    activation: Literal["tanh", "relu", "leaky_relu"] = "tanh"
    upsample: Literal["nearest", "bilinear"] = "nearest"
    residual: bool = True  # decoders add detail to the upsampled code (better on digits than drawing it all)
    codes_per_class: int = 0  # 0 = as many as the budget holds after the decoders
    pairs_per_class: int = 0  # (code, decoder) pairs matched per class per iteration; 0 = all
    warmup_steps: int = 100  # autoencoder warm start of the decoders before matching (optim.warmup_lr)
    div_weight: float = 0.0  # pushes decoders' outputs apart (a guess at KFS's extra term; 0 = off)

    def value_problems(self) -> list[str]:
        problems = check_values(self, {"downsample": "positive", "latent_channels": "non-negative",
                                       "decoders": "positive", "hidden": "positive",
                                       "codes_per_class": "non-negative", "pairs_per_class": "non-negative",
                                       "warmup_steps": "non-negative", "div_weight": "non-negative"})
        if self.div_weight and self.pairs_per_class:
            problems.append("div_weight: needs every pair decoded; set kfs.pairs_per_class=0")
        return problems


@dataclasses.dataclass(frozen=True)
class HerdingSpec:
    feature_epochs: int = 0  # train the feature ConvNet on the real data this long first; 0 = random features

    def value_problems(self) -> list[str]:
        return check_values(self, {"feature_epochs": "non-negative"})


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """The ``condensed`` protocol: fresh networks trained on the condensed set (DC/DM's evaluate_synset)."""

    runs: int = 1  # networks trained at the end of condensation (0 = none); `mltk eval` takes --runs
    epochs: int = 300  # 1000 in the papers
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    batch_size: int = 256
    dsa: str = "auto"  # augmentation while training on the condensed set, per image

    def value_problems(self) -> list[str]:
        return check_values(self, {"runs": "non-negative", "epochs": "non-negative", "lr": "positive",
                                   "momentum": "fraction", "weight_decay": "non-negative",
                                   "batch_size": "positive"})


@dataclasses.dataclass(frozen=True)
class CondenseConfig:
    name: str = ""  # artifact name; empty = <method>-<dataset>-ipc<N>
    seed: int = 0
    device: str = "auto"
    method: Literal["kfs", "dm", "random", "herding"] = "kfs"
    ipc: int = 1  # the storage budget: images per class, in stored floats
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    model: NetSpec = dataclasses.field(default_factory=NetSpec)
    match: MatchSpec = dataclasses.field(default_factory=MatchSpec)
    optim: CondenseOptimSpec = dataclasses.field(default_factory=CondenseOptimSpec)
    train: CondenseTrainSpec = dataclasses.field(default_factory=CondenseTrainSpec)
    kfs: KfsSpec = dataclasses.field(default_factory=KfsSpec)
    herding: HerdingSpec = dataclasses.field(default_factory=HerdingSpec)
    eval: EvalSpec = dataclasses.field(default_factory=EvalSpec)

    def value_problems(self) -> list[str]:
        return check_values(self, {"ipc": "positive"})

    def artifact_name(self) -> str:
        if self.name:
            return self.name
        dataset = self.data.name.split(":")[0]
        return f"{self.method}-{dataset}-ipc{self.ipc}".replace("_", "-")
