"""Configuration of the ``softnet`` recipe: base session + every incremental session, one method.

``method`` picks the sub-network treatment; everything else (backbone, data,
sessions, budgets) means the same for all four, so they compare like for like:

* ``softnet``: masked net, minor mask U(0, 1); sessions train the minor weights of ``incremental.layers``.
* ``hardnet``: masked net, minor mask 0; sessions only add prototypes (the minor weights have no effect).
* ``finetune``: dense net; sessions train every weight of ``incremental.layers`` (same loss, steps, lr).
* ``ncm``: dense net, frozen after the base session; sessions only add prototypes.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from mltk.core.sections import LoopSettings, OptimizerSettings, check_values
from mltk.data.splits import DataSpec

Method = Literal["softnet", "hardnet", "finetune", "ncm"]
TRAINS_IN_SESSIONS = ("softnet", "finetune")


@dataclasses.dataclass(frozen=True)
class SessionSpec:
    index_lists: str = ""  # folder of the CEC/TOPIC session_N.txt lists; empty = a generated plan (keys below)
    base_classes: int = 60
    ways: int = 5
    shots: int = 5
    sessions: int = 8  # incremental sessions after the base one
    base_images_per_class: int = 0  # generated plans: cap on base images per class (seeded); 0 = all
    seed: int = 0  # generated plans: which shots

    def value_problems(self) -> list[str]:
        return check_values(self, {"base_classes": "positive", "ways": "positive", "shots": "positive",
                                   "sessions": "non-negative", "base_images_per_class": "non-negative"})


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    widths: tuple[int, ...] = (64, 128, 256, 512)  # channels per ResNet stage (ResNet-18: 64..512)
    blocks: tuple[int, ...] = (2, 2, 2, 2)  # residual blocks per stage
    capacity: float = 0.7  # c: the fraction of each layer's weights in the major sub-network

    def value_problems(self) -> list[str]:
        problems = []
        if not 0 < self.capacity <= 1:
            problems.append(f"capacity: must lie in (0, 1], got {self.capacity}")
        if len(self.widths) != len(self.blocks) or not self.widths:
            problems.append("widths and blocks: one entry per stage, the same number of each")
        if any(v <= 0 for v in (*self.widths, *self.blocks)):
            problems.append("widths and blocks: every entry must be positive")
        return problems


@dataclasses.dataclass(frozen=True)
class OptimSpec(OptimizerSettings):
    lr: float = 0.1  # base session, SGD
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay_at: tuple[float, ...] = (0.5,)  # fractions of the base session where lr drops by decay_factor
    decay_factor: float = 0.01

    def value_problems(self) -> list[str]:
        problems = super().value_problems() + check_values(self, {"momentum": "fraction",
                                                                  "decay_factor": "positive"})
        if any(not 0 <= point <= 1 for point in self.decay_at):
            problems.append("decay_at: each point is a fraction of the base session, in [0, 1]")
        return problems


@dataclasses.dataclass(frozen=True)
class IncrementalSpec:
    layers: tuple[str, ...] = ("last",)  # modules whose convs sessions train ("last" = the last residual block)
    steps: int = 15  # optimizer steps per session, each on all of the session's shots
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 5e-4  # on the trained weights only
    temperature: float = 1.0  # the prototype loss's logit scale (omega)

    def value_problems(self) -> list[str]:
        problems = check_values(self, {"steps": "non-negative", "lr": "positive", "momentum": "fraction",
                                       "weight_decay": "non-negative", "temperature": "positive"})
        if not self.layers:
            problems.append("layers: name at least one module (e.g. last, or stages.3.1)")
        return problems


@dataclasses.dataclass(frozen=True)
class TrainSpec(LoopSettings):
    epochs: int = 240  # base session
    batch_size: int = 256  # base session, global: split evenly over the ranks
    max_steps: int = 0  # cap on base-session steps (ends its schedule there); 0 = epochs decide
    augment: Literal["crop-flip", "crop", "none"] = "crop-flip"  # base and incremental steps
    eval_batch_size: int = 512
    test_per_class: int = 0  # score on this many (seeded) test images per class; 0 = all
    log_every: int = 50

    def value_problems(self) -> list[str]:
        return super().value_problems() + check_values(
            self, {"epochs": "positive", "batch_size": "positive", "max_steps": "non-negative",
                   "eval_batch_size": "positive", "test_per_class": "non-negative", "log_every": "positive"})


@dataclasses.dataclass(frozen=True)
class FscilConfig:
    name: str = ""  # artifact name; empty = softnet-<method>-<dataset>
    seed: int = 0
    device: str = "auto"
    method: Method = "softnet"
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    sessions: SessionSpec = dataclasses.field(default_factory=SessionSpec)
    model: ModelSpec = dataclasses.field(default_factory=ModelSpec)
    optim: OptimSpec = dataclasses.field(default_factory=OptimSpec)
    incremental: IncrementalSpec = dataclasses.field(default_factory=IncrementalSpec)
    train: TrainSpec = dataclasses.field(default_factory=TrainSpec)

    def artifact_name(self) -> str:
        if self.name:
            return self.name
        dataset = self.data.name.split(":")[0]
        return f"fscil-{self.method}-{dataset}".replace("_", "-")

    @property
    def masking(self) -> str:
        return {"softnet": "soft", "hardnet": "hard"}.get(self.method, "none")
