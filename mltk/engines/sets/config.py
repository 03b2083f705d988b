"""Configuration of ``mltk train umbc``: the data, the set model, and how large sets are trained.

``model.kind`` picks UMBC or one of the baselines it is compared with (``sse``, ``deepsets``,
``set-transformer``) so that every model trains with the same data, schedule and budget.
"""

from __future__ import annotations

import dataclasses

from mltk.core.sections import LoopSettings, OptimizerSettings, check_values
from mltk.engines.sets.model import SetModelSpec


@dataclasses.dataclass(frozen=True)
class SetDataSpec:
    name: str = "mog"  # mog | modelnet:PATH | npz:PATH | h5:PATH | voxels:PATH (see docs/sets.md)
    points: int = 1024  # points per cloud (sampled from meshes / voxels, the first N of arrays)
    test_fraction: float = 0.25  # held out per class, for sources without their own split
    set_size: int = 512  # mog: elements per training set
    components: int = 4  # mog: mixture components (= the model's output rows)
    dims: int = 2  # mog: dimensions
    test_sets: int = 64  # mog: held-out sets per test size
    test_sizes: tuple[int, ...] = (8, 64, 512, 1024)  # mog: held-out set sizes, each encoded in chunks

    def value_problems(self) -> list[str]:
        problems = check_values(self, {"points": "positive", "test_fraction": "fraction", "set_size": "positive",
                                       "components": "positive", "dims": "positive", "test_sets": "positive"})
        if any(size < 1 for size in self.test_sizes):
            problems.append("test_sizes: every size must be at least 1")
        if self.test_fraction >= 1:
            problems.append("test_fraction: must leave something to train on (below 1)")
        return problems

    @property
    def is_mog(self) -> bool:
        return self.name == "mog"


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    kind: str = "umbc"  # umbc | sse | deepsets | set-transformer
    hidden: int = 128
    extractor_layers: int = 1
    slots: int = 4  # K
    heads: int = 4
    slot_type: str = "random"  # learned | random (drawn once per set)
    activation: str = "softmax"  # softmax | sigmoid | slot-sigmoid | slot-softmax | slot-exp
    slot_residual: bool = True
    head: str = "sab"  # umbc: sab | isab | pma | deepsets | mlp
    head_layers: int = 3
    pooling: str = "mean"  # deepsets: sum | mean | max | min
    inducing: int = 16
    pma_feedforward: bool = True  # Linear + ReLU in front of PMA (the paper's rFF); false = the official code's PMA

    def value_problems(self) -> list[str]:
        return SetModelSpec(**dataclasses.asdict(self)).problems()


@dataclasses.dataclass(frozen=True)
class OptimSpec(OptimizerSettings):
    lr: float = 1e-3  # Adam (official MoG setting)
    decay_at: float = 0.7  # fraction of the run where lr drops x0.1 (epoch 35 of 50 in the official MoG run)


@dataclasses.dataclass(frozen=True)
class TrainSpec(LoopSettings):
    steps: int = 1000
    batch_size: int = 10  # sets per step, global: split evenly over the ranks
    grad_set_size: int = 0  # elements per set that carry gradients (0 = all); the rest forwarded without a graph
    chunk_size: int = 256  # elements per no-grad chunk when grad_set_size > 0
    element_dropout: float = 0.0  # set-element dropout rate in training (and MC at test time)
    log_every: int = 50

    def value_problems(self) -> list[str]:
        return super().value_problems() + check_values(
            self, {"steps": "positive", "batch_size": "positive", "grad_set_size": "non-negative",
                   "chunk_size": "positive", "element_dropout": "fraction", "log_every": "positive"})


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    chunk_size: int = 100  # held-out sets are encoded streamed in chunks of this many elements
    mc_samples: int = 10  # MC set-element dropout samples at test time (with train.element_dropout > 0)
    corruption: float = 0.3  # noise std added to held-out point clouds for the corrupted-calibration figures
    bins: int = 10  # ECE bins

    def value_problems(self) -> list[str]:
        return check_values(self, {"chunk_size": "positive", "mc_samples": "positive",
                                   "corruption": "non-negative", "bins": "positive"})


@dataclasses.dataclass(frozen=True)
class UmbcConfig:
    name: str = ""  # artifact name; empty = umbc
    seed: int = 0
    device: str = "auto"
    data: SetDataSpec = dataclasses.field(default_factory=SetDataSpec)
    model: ModelSettings = dataclasses.field(default_factory=ModelSettings)
    optim: OptimSpec = dataclasses.field(default_factory=OptimSpec)
    train: TrainSpec = dataclasses.field(default_factory=TrainSpec)
    eval: EvalSpec = dataclasses.field(default_factory=EvalSpec)

    recipe = "umbc"

    def artifact_name(self) -> str:
        return self.name or self.recipe
