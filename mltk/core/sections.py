"""Config sections every training recipe shares, with the ranges their values must lie in.

An engine's ``train`` section extends :class:`LoopSettings` (how the shared
step loop checkpoints, mixes precision and compiles) and its ``optim``
section extends :class:`OptimizerSettings`; each adds only what its method
needs. The same keys then mean the same thing in every recipe::

    train.ckpt_every  train.ckpt_minutes  train.keep_checkpoints  train.amp  train.compile
    optim.lr  optim.weight_decay  optim.grad_clip

A section checks its values in ``value_problems()``; ``mltk.core.config``
collects those problems with the unknown keys and wrong types and reports
them all at once, before any process is started.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal


def check_values(section, rules: dict[str, str]) -> list[str]:
    """Problems of ``section``'s fields against ``rules``: field -> positive | non-negative | fraction | finite."""
    problems = []
    for name, rule in rules.items():
        value = getattr(section, name)
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{name}: must be a finite number, got {value}")
        elif rule == "positive" and not value > 0:
            problems.append(f"{name}: must be positive, got {value}")
        elif rule == "non-negative" and not value >= 0:
            problems.append(f"{name}: must not be negative, got {value}")
        elif rule == "fraction" and not 0 <= value <= 1:
            problems.append(f"{name}: must lie in [0, 1], got {value}")
    return problems


@dataclasses.dataclass(frozen=True)
class CheckpointSettings:
    ckpt_every: int = 0  # steps between checkpoints; 0 = by time, see ckpt_minutes
    ckpt_minutes: float = 5.0  # with ckpt_every 0: checkpoint when this much training is unsaved (and at the end)
    keep_checkpoints: int = 2

    def value_problems(self) -> list[str]:
        return check_values(self, {"ckpt_every": "non-negative", "ckpt_minutes": "positive",
                                   "keep_checkpoints": "non-negative"})


@dataclasses.dataclass(frozen=True)
class LoopSettings(CheckpointSettings):
    amp: Literal["auto", "on", "off"] = "auto"  # mixed precision on CUDA
    compile: bool = False  # torch.compile the trained module (CUDA runs of many steps)


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    lr: float = 0.01
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # clip the global gradient norm to this; 0 = no clipping

    def value_problems(self) -> list[str]:
        return check_values(self, {"lr": "positive", "weight_decay": "non-negative", "grad_clip": "non-negative"})
