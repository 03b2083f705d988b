"""Configuration of the ``oriented-rcnn`` and ``uagdet`` recipes (train an oriented detector).

``uagdet`` is ``oriented-rcnn`` plus a ``graph`` section; everything else
means the same in both, so the two train the same detector on the same data
and schedule and differ only in the graph refinement.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from mltk.core.sections import LoopSettings, OptimizerSettings, check_values
from mltk.engines.detect.backbone import BODIES
from mltk.engines.detect.proposals import ProposalSettings
from mltk.engines.detect.roi_head import RoiSettings
from mltk.engines.detect.uagdet import GraphSettings


@dataclasses.dataclass(frozen=True)
class DotaDataSpec:
    name: str = "dota:"  # dota:PATH, a folder with images/ and labelTxt/ (DOTA's layout)
    classes: Literal["dota-v1.0", "dota-v1.5"] = "dota-v1.0"
    patch_size: int = 1024  # training and detection patches (DOTA's 1024 / 200 convention)
    overlap: int = 200
    min_inside: float = 0.7  # an object belongs to a patch when this share of its area lies inside (mmrotate)
    val_fraction: float = 0.25  # held out: the last images by name, or with one image a strip of it
    val_side: Literal["right", "bottom"] = "right"  # the strip held out of a single image
    keep_empty: bool = False  # train on patches without objects too

    def value_problems(self) -> list[str]:
        problems = check_values(self, {"patch_size": "positive", "overlap": "non-negative",
                                       "min_inside": "fraction", "val_fraction": "fraction"})
        if not self.name.startswith("dota:") or self.name == "dota:":
            problems.append(f"name: {self.name!r} is not dota:PATH (a folder with images/ and labelTxt/)")
        if self.overlap >= self.patch_size:
            problems.append(f"overlap: {self.overlap} must be smaller than patch_size {self.patch_size}")
        if self.val_fraction >= 1:
            problems.append("val_fraction: must leave something to train on (below 1)")
        return problems


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    backbone: str = "resnet18"  # resnet18, resnet34, resnet50 or mobilenet_v3_large (torchvision)
    backbone_weights: str = ""  # a local torchvision weights file for the backbone; empty = train from scratch
    fpn_channels: int = 256
    norm: Literal["batch", "frozen"] = "batch"  # frozen: torchvision's choice with pretrained weights
    proposals: ProposalSettings = dataclasses.field(default_factory=ProposalSettings)
    roi: RoiSettings = dataclasses.field(default_factory=RoiSettings)

    def value_problems(self) -> list[str]:
        problems = check_values(self, {"fpn_channels": "positive"})
        if self.backbone not in BODIES:
            problems.append(f"backbone: {self.backbone!r} is not one of {', '.join(BODIES)}")
        return problems


@dataclasses.dataclass(frozen=True)
class OptimSpec(OptimizerSettings):
    lr: float = 0.005  # SGD, mmrotate's 1x schedule for a batch of 2
    momentum: float = 0.9
    weight_decay: float = 1e-4
    grad_clip: float = 35.0
    warmup_steps: int = 500  # linear from warmup_ratio * lr
    warmup_ratio: float = 1.0 / 3.0
    decay_at: tuple[float, ...] = (8 / 12, 11 / 12)  # fractions of the run where lr drops x0.1 (epochs 8 and 11 of 12)

    def value_problems(self) -> list[str]:
        problems = super().value_problems() + check_values(
            self, {"momentum": "fraction", "warmup_steps": "non-negative", "warmup_ratio": "fraction"})
        if any(not 0 <= point <= 1 for point in self.decay_at):
            problems.append("decay_at: each point is a fraction of the run, in [0, 1]")
        return problems


@dataclasses.dataclass(frozen=True)
class TrainSpec(LoopSettings):
    epochs: int = 12  # passes over the training patches
    batch_size: int = 2  # patches per step, global: split evenly over the ranks
    max_steps: int = 0  # stop (and end the schedule) after this many steps; 0 = epochs decide
    flip: bool = True  # random horizontal flips
    log_every: int = 50  # steps between metric lines

    def value_problems(self) -> list[str]:
        return super().value_problems() + check_values(
            self, {"epochs": "positive", "batch_size": "positive", "max_steps": "non-negative",
                   "log_every": "positive"})


@dataclasses.dataclass(frozen=True)
class OrientedRcnnConfig:
    name: str = ""  # artifact name; empty = the recipe's name
    seed: int = 0
    device: str = "auto"
    data: DotaDataSpec = dataclasses.field(default_factory=DotaDataSpec)
    model: ModelSpec = dataclasses.field(default_factory=ModelSpec)
    optim: OptimSpec = dataclasses.field(default_factory=OptimSpec)
    train: TrainSpec = dataclasses.field(default_factory=TrainSpec)

    recipe = "oriented-rcnn"

    def graph_settings(self) -> GraphSettings:
        return GraphSettings(refine="none")

    def artifact_name(self) -> str:
        return self.name or self.recipe


@dataclasses.dataclass(frozen=True)
class UagdetConfig(OrientedRcnnConfig):
    graph: GraphSettings = dataclasses.field(default_factory=GraphSettings)

    recipe = "uagdet"

    def graph_settings(self) -> GraphSettings:
        return self.graph
