"""Configuration of the ``mavrl`` recipe: MAVRL and its baselines (``method=``) on one encoder, data and budget.

Keys marked "our reading" are choices the paper's text does not settle (no
code is public); docs/robust.md lists them.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from mltk.core.sections import LoopSettings, OptimizerSettings, check_values

METHODS = ("mavrl", "maml", "aq", "adml", "rocl")


@dataclasses.dataclass(frozen=True)
class EpisodeData:
    domain: str = "omniglot"  # meta-training domain: digits, omniglot, cifar10, imagefolder:PATH (see domains.py)
    data_dir: str | None = None  # where the domain's files lie; None = $MLTK_DATA
    image_size: int = 28
    channels: int = 1
    train_classes: float = 0.7  # the share of the domain's classes meta-trained on; the rest are unseen classes
    class_seed: int = 0  # which classes are which
    max_per_class: int = 0  # read at most this many images per class (CIFAR-10: 600, as CIFAR-FS); 0 = all

    def value_problems(self) -> list[str]:
        found = check_values(self, {"image_size": "positive", "max_per_class": "non-negative"})
        if not 0 < self.train_classes < 1:
            found.append(f"train_classes: must lie strictly between 0 and 1, got {self.train_classes}")
        if self.channels not in (1, 3):
            found.append(f"channels: must be 1 or 3, got {self.channels}")
        return found


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    encoder: Literal["conv4", "resnet12"] = "conv4"
    width: int = 32  # Conv4 channels; ResNet-12's first stage (64 = the standard 64-160-320-640)
    projection_dim: int = 64

    def value_problems(self) -> list[str]:
        return check_values(self, {"width": "positive", "projection_dim": "positive"})


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    n_way: int = 5
    k_shot: int = 1
    queries: int = 5  # query images per class
    meta_batch: int = 4  # tasks per outer step (global: split over the ranks)

    def value_problems(self) -> list[str]:
        return check_values(self, {"n_way": "positive", "k_shot": "positive", "queries": "positive",
                                   "meta_batch": "positive"})


@dataclasses.dataclass(frozen=True)
class InnerLoop:
    steps: int = 1
    lr: float = 0.1
    second_order: bool = False  # differentiate through the inner updates (create_graph); False = first-order
    loss: Literal["ce", "simclr"] = "ce"  # our reading: CE on the support labels; simclr: label-free NT-Xent
    test_steps: int = 10  # inner steps at meta-test (fine-tuning adaptation)

    def value_problems(self) -> list[str]:
        return check_values(self, {"steps": "positive", "lr": "positive", "test_steps": "positive"})


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    eps: float = 8 / 255  # L-inf, [0, 1] pixel scale
    step_size: float = 2 / 255
    steps: int = 3  # training attacks (the brief: K <= 3 on CPU; RoCL used 7-10)
    random_start: bool = True
    temperature: float = 0.5  # NT-Xent temperature of the label-free attack and losses (RoCL: 0.5)

    def value_problems(self) -> list[str]:
        return check_values(self, {"eps": "fraction", "step_size": "fraction", "steps": "positive",
                                   "temperature": "positive"})


@dataclasses.dataclass(frozen=True)
class MavrlSpec:
    agreement: Literal["ntxent", "cosine"] = "ntxent"  # our reading: the agreement loss of the adversarial views
    agreement_weight: float = 1.0
    clean_weight: float = 1.0  # our reading: the clean task term, CE of both adapted encoders on the query set
    crop_scale: float = 0.6  # views: random resized crops of scale [crop_scale, 1]
    flip: bool = False  # views: left-right flips (off for characters and digits)

    def value_problems(self) -> list[str]:
        return check_values(self, {"agreement_weight": "non-negative", "clean_weight": "non-negative",
                                   "crop_scale": "fraction"})


@dataclasses.dataclass(frozen=True)
class OptimSpec(OptimizerSettings):
    lr: float = 1e-3  # Adam, the outer (meta) learning rate


@dataclasses.dataclass(frozen=True)
class TrainSpec(LoopSettings):
    steps: int = 300  # outer steps
    log_every: int = 50

    def value_problems(self) -> list[str]:
        return super().value_problems() + check_values(self, {"steps": "positive", "log_every": "positive"})


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    tasks: int = 100  # few-shot tasks on the unseen classes at the end of training
    attack_steps: int = 10  # PGD steps of that evaluation (the fewshot protocol defaults to 20)
    queries: int = 15  # query images per class of each evaluation task
    seed: int = 0  # task seed: every method and training seed is scored on the same tasks

    def value_problems(self) -> list[str]:
        return check_values(self, {"tasks": "non-negative", "attack_steps": "positive"})


@dataclasses.dataclass(frozen=True)
class MavrlConfig:
    name: str = ""  # artifact name; empty = <method>-<encoder>-<domain>
    method: Literal["mavrl", "maml", "aq", "adml", "rocl"] = "mavrl"
    seed: int = 0
    device: str = "auto"
    data: EpisodeData = dataclasses.field(default_factory=EpisodeData)
    model: ModelSpec = dataclasses.field(default_factory=ModelSpec)
    task: TaskSpec = dataclasses.field(default_factory=TaskSpec)
    inner: InnerLoop = dataclasses.field(default_factory=InnerLoop)
    attack: AttackSpec = dataclasses.field(default_factory=AttackSpec)
    mavrl: MavrlSpec = dataclasses.field(default_factory=MavrlSpec)
    optim: OptimSpec = dataclasses.field(default_factory=OptimSpec)
    train: TrainSpec = dataclasses.field(default_factory=TrainSpec)
    eval: EvalSpec = dataclasses.field(default_factory=EvalSpec)

    def artifact_name(self) -> str:
        if self.name:
            return self.name
        domain = self.data.domain.split(":")[0]
        return f"{self.method}-{self.model.encoder}-{domain}"
