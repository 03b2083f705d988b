"""What each ``--method`` means, as settings of the shared machinery.

| method   | schedule     | inputs of a quantized layer | ReLU feeding it | STE     | weight codes and scales     |
|----------|--------------|-----------------------------|-----------------|---------|-----------------------------|
| xnor     | all-at-once  | sign(x)                     | removed         | clipped | sign(w), mean abs(w)        |
| reactnet | two-step     | sign(x - learned threshold) | RPReLU          | approx  | sign(w), mean abs(w)        |
| bitat    | progressive  | as reactnet (or as xnor)    | as reactnet     | approx  | importance-weighted (C = U diag(lam) U^T) |
| uniform  | all-at-once  | float, or b-bit uniform     | kept            | -       | b-bit levels, learned step  |

XNOR-Net and ReActNet both compute their weight scale per output channel as
the mean absolute weight; here that is the identity transform of BiTAT's
importance-weighted binarization, so the methods differ only where the
table says they do. Every method trains for the same steps with the same
optimizer, data and distillation, and at W1/A1 gets the same real-valued
shortcuts around its binary-input layers (``quant.float_shortcuts``, on by
default; see ``FloatShortcut``).
"""

from __future__ import annotations

import dataclasses

from mltk.engines.quantize.config import QuantizeConfig
from mltk.engines.quantize.network import TrainingOptions


@dataclasses.dataclass(frozen=True)
class MethodSettings:
    name: str
    schedule: str  # all-at-once | two-step | progressive
    act_kind: str  # sign | rsign | uniform | none
    binary_activation: str  # identity | rprelu (what replaces a ReLU feeding a binary-input layer)
    ste: str  # clipped | approx
    transform: str  # identity | pca | learned
    learn_step: bool  # uniform quantizers: LSQ, or post-training ranges

    def describe(self) -> dict:
        return dataclasses.asdict(self)


def method_settings(cfg: QuantizeConfig) -> MethodSettings:
    method, act_bits = cfg.method(), cfg.act_bits()
    if method == "uniform":
        post_training = cfg.quant.bits == 8
        return MethodSettings("uniform", "all-at-once", "none" if act_bits == 32 else "uniform", "identity",
                              "clipped", "identity", learn_step=not post_training)
    binary_inputs = act_bits == 1
    if method == "xnor":
        act_kind, activation, ste, transform, schedule = "sign", "identity", "clipped", "identity", "all-at-once"
    elif method == "reactnet":
        act_kind, activation, ste, transform, schedule = "rsign", "rprelu", "approx", "identity", "two-step"
    else:
        reactnet_like = cfg.bitat.activations == "reactnet"
        act_kind = "rsign" if reactnet_like else "sign"
        activation = "rprelu" if reactnet_like else "identity"
        ste = "approx" if reactnet_like else "clipped"
        transform, schedule = cfg.bitat.transform, "progressive"
    if not binary_inputs:
        act_kind = "none"
    return MethodSettings(method, schedule, act_kind, activation, ste, transform, learn_step=True)


def training_options(cfg: QuantizeConfig, settings: MethodSettings) -> TrainingOptions:
    """How the QAT form of ``settings``' method quantizes under ``cfg``."""
    return TrainingOptions(transform=settings.transform, parameterization=cfg.bitat.parameterization,
                           refine_iters=cfg.bitat.refine_iters, rank=cfg.bitat.rank,
                           learned_max_dim=cfg.bitat.learned_max_dim, ste=settings.ste,
                           learn_step=settings.learn_step)


def is_post_training(cfg: QuantizeConfig) -> bool:
    """8-bit weights are quantized after training, without QAT steps."""
    return cfg.method() == "uniform" and cfg.quant.bits == 8
