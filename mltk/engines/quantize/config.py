"""Configuration of ``mltk quantize`` (BiTAT and its baselines, uniform 2/4/8-bit)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Literal

from mltk.core.sections import LoopSettings, OptimizerSettings, check_values
from mltk.nn.artifacts import looks_like_path

METHODS = ("auto", "bitat", "xnor", "reactnet", "uniform")
BITS = (1, 2, 4, 8)
ACT_BITS = (0, 1, 2, 4, 8, 32)


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """The full-precision model to quantize."""

    ref: str = ""  # registry reference (name, name:3, name@best) or a file: .pt/.pth state_dict, .safetensors
    arch: str = "auto"  # architecture of a foreign file; auto = inferred from its keys
    options: dict = dataclasses.field(default_factory=dict)  # architecture options of a foreign file (stem_stride, ...)
    mean: list[float] | None = None  # input normalisation of a foreign file; None = 0.5 per channel
    std: list[float] | None = None


@dataclasses.dataclass(frozen=True)
class QuantDataSpec:
    """Calibration and training data; an empty name means the data the model was trained on."""

    name: str = ""
    data_dir: str | None = None
    download: bool = False
    val_holdout: float = 0.0
    test_holdout: float = 0.0
    holdout_seed: int = 0


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    method: Literal["auto", "bitat", "xnor", "reactnet", "uniform"] = "auto"  # auto: bitat at 1 bit, else uniform
    bits: int = 1  # weight bits: 1 (binary), 2, 4, 8
    act_bits: int = 0  # input bits of quantized layers: 0 = 1 at --bits 1, else 32 (float)
    skip: list[str] = dataclasses.field(default_factory=list)  # fnmatch patterns of layers to keep in float
    # with binary activations, the layers of blocks whose narrowest tensor has fewer channels stay float (the
    # sign of a narrow bottleneck keeps too little of it); 0 = binarize every layer but stem and classifier
    min_binary_channels: int = 32
    # real-valued shortcut around every binary-input layer: BN(conv(sign(x))) + shortcut(x), parameter-free
    # (identity, channel repeat / group mean, average pooling); our adaptation of Bi-Real Net / ReActNet
    float_shortcuts: bool = True
    # when a layer's inputs turn binary, the BatchNorm scale of its binary branch (what its float shortcut goes
    # around) is multiplied by this: below 1 the network starts near its float path and the branches grow in;
    # 0 = by architecture (QuantizeConfig.branch_gain), 1 = off
    branch_gain: float = 0.0
    # dtype of the per-channel float vectors in the artifact (folded scales/biases, thresholds, RPReLU, BN)
    vector_dtype: Literal["float16", "float32"] = "float32"


@dataclasses.dataclass(frozen=True)
class BitatSpec:
    transform: Literal["identity", "pca", "learned"] = "pca"
    parameterization: Literal["cayley", "expm"] = "cayley"  # of the learned orthonormal transform
    refine_iters: int = 3  # importance-weighted code refinement sweeps per step (0 = sign codes, weighted scales)
    rank: int = 0  # PCA correlations kept to their k strongest directions (0 = full; layers with d <= 2k stay full)
    learned_max_dim: int = 256  # layers with longer rows keep the PCA transform under transform=learned
    stages: int = 0  # bottom-up stages; 0 = one per quantized layer
    progressive_fraction: float = 0.5  # share of the steps spent on the stages; the rest trains everything
    activations: Literal["reactnet", "xnor"] = "reactnet"  # RSign+RPReLU+ApproxSign, or sign+identity+clipped STE


@dataclasses.dataclass(frozen=True)
class ReactnetSpec:
    step1_fraction: float = 0.5  # share of the steps with binary activations and float weights


@dataclasses.dataclass(frozen=True)
class KDSpec:
    weight: float = 0.5  # loss = (1 - weight) * CE + weight * T^2 * KL(teacher || student); 0 = off
    temperature: float = 1.0


@dataclasses.dataclass(frozen=True)
class CalibrationSpec:
    images: int = 512  # train images that estimate input statistics (correlations, activation ranges)
    batch_size: int = 128


@dataclasses.dataclass(frozen=True)
class QuantTrainSpec(LoopSettings):
    epochs: int = 10  # QAT epochs (the same for every method); 8-bit post-training ignores them
    # float epochs before QAT: float shortcuts on, every quantizer off (W1/A1 with quant.float_shortcuts only)
    adapt_epochs: int = 0
    batch_size: int = 64
    eval_batch_size: int = 512
    augment: Literal["auto", "none", "crop", "crop-flip"] = "auto"
    max_steps: int = 0  # stop after this many steps (the schedule shrinks to fit); 0 = epochs decide
    amp: Literal["auto", "on", "off"] = "off"  # QAT's sign and rounding steps run in float32 unless asked

    def value_problems(self) -> list[str]:
        return super().value_problems() + check_values(
            self, {"epochs": "non-negative", "adapt_epochs": "non-negative", "batch_size": "positive",
                   "eval_batch_size": "positive", "max_steps": "non-negative"})


@dataclasses.dataclass(frozen=True)
class QuantOptimSpec(OptimizerSettings):
    name: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"  # within each phase of the method's schedule


@dataclasses.dataclass(frozen=True)
class QuantizeConfig:
    name: str = ""  # artifact name; empty = <parent>-w<bits>a<act bits>-<method>
    seed: int = 0
    device: str = "auto"
    budget_for: str = ""  # the dataset a preset's budget is sized for (set by the preset); other data is flagged
    model: SourceSpec = dataclasses.field(default_factory=SourceSpec)
    data: QuantDataSpec = dataclasses.field(default_factory=QuantDataSpec)
    quant: QuantSpec = dataclasses.field(default_factory=QuantSpec)
    bitat: BitatSpec = dataclasses.field(default_factory=BitatSpec)
    reactnet: ReactnetSpec = dataclasses.field(default_factory=ReactnetSpec)
    kd: KDSpec = dataclasses.field(default_factory=KDSpec)
    calibration: CalibrationSpec = dataclasses.field(default_factory=CalibrationSpec)
    optim: QuantOptimSpec = dataclasses.field(default_factory=QuantOptimSpec)
    train: QuantTrainSpec = dataclasses.field(default_factory=QuantTrainSpec)

    def value_problems(self) -> list[str]:
        return config_problems(self)

    def method(self) -> str:
        """The method that runs: ``auto`` resolved by the number of bits."""
        if self.quant.method != "auto":
            return self.quant.method
        return "bitat" if self.quant.bits == 1 else "uniform"

    def act_bits(self) -> int:
        """Input bits of quantized layers: 32 means float."""
        if self.quant.act_bits:
            return self.quant.act_bits
        return 1 if self.quant.bits == 1 else 32

    def branch_gain(self, arch: str) -> float:
        """The starting gain of binary branches: ``quant.branch_gain``, or for 0 the one chosen for ``arch`` on
        validation splits (benchmarks/results/quantize_branch_gain.md): 0.01 for MobileNetV2, whose 30-odd
        binary layers otherwise each add sign noise as large as the signal (+8 to +12 points on digits, +2.7 on
        CIFAR-10), 1 elsewhere (ConvNet-3, two binary layers, lost 4 to 7 points at 0.01)."""
        if self.quant.branch_gain:
            return self.quant.branch_gain
        return 0.01 if arch == "mobilenet_v2" else 1.0

    def artifact_name(self) -> str:
        if self.name:
            return self.name
        act = "32" if self.act_bits() == 32 else str(self.act_bits())
        return f"{base_name(self.model.ref)}-w{self.quant.bits}a{act}-{self.method()}"


def base_name(ref: str) -> str:
    """A registry-safe stem for names derived from ``ref`` (``mobilenet-digits:3`` -> ``mobilenet-digits``)."""
    stem = Path(ref).stem if looks_like_path(ref) else re.split(r"[:@]", ref)[0]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "model"
    return stem[:80]


def config_problems(cfg: QuantizeConfig) -> list[str]:
    """Every value a dataclass type cannot rule out, checked at once."""
    problems = []
    q = cfg.quant
    if q.bits not in BITS:
        problems.append(f"quant.bits: {q.bits} is not supported; choose 1 (binary), 2, 4 or 8")
    if q.act_bits not in ACT_BITS:
        problems.append(f"quant.act_bits: {q.act_bits} is not supported; choose 1, 2, 4, 8 or 32 (float)")
    method = cfg.method()
    if q.bits == 1 and method == "uniform":
        problems.append("quant.method: uniform quantizes to 2, 4 or 8 bits; at --bits 1 use bitat, xnor or reactnet")
    if q.bits in (2, 4, 8) and method != "uniform":
        problems.append(f"quant.method: {method} binarizes (--bits 1); --bits {q.bits} uses uniform quantization "
                        "(leave --method out)")
    if q.bits in (2, 4, 8) and cfg.act_bits() == 1:
        problems.append("quant.act_bits: binary activations go with --bits 1; choose 2, 4, 8 or 32")
    if q.bits == 1 and cfg.act_bits() not in (1, 32):
        problems.append("quant.act_bits: with --bits 1 activations are binary (1) or float (32)")
    if q.min_binary_channels < 0:
        problems.append(f"quant.min_binary_channels: must be >= 0 (0 = binarize every layer), "
                        f"got {q.min_binary_channels}")
    if q.branch_gain < 0:
        problems.append(f"quant.branch_gain: must be >= 0 (0 = by architecture, 1 = the branch as the float "
                        f"layer had it), got {q.branch_gain}")
    b = cfg.bitat
    if b.refine_iters < 0:
        problems.append(f"bitat.refine_iters: must be >= 0, got {b.refine_iters}")
    if b.rank < 0:
        problems.append(f"bitat.rank: must be >= 0 (0 = the full correlation), got {b.rank}")
    elif b.rank and b.transform == "identity":
        problems.append(f"bitat.rank={b.rank}: the identity transform has no correlation to approximate; "
                        f"use bitat.transform=pca or drop bitat.rank")
    if not 0 <= b.progressive_fraction <= 1:
        problems.append(f"bitat.progressive_fraction: must lie in [0, 1], got {b.progressive_fraction}")
    if b.stages < 0:
        problems.append(f"bitat.stages: must be >= 0 (0 = one stage per layer), got {b.stages}")
    if not 0 <= cfg.reactnet.step1_fraction <= 1:
        problems.append(f"reactnet.step1_fraction: must lie in [0, 1], got {cfg.reactnet.step1_fraction}")
    if not 0 <= cfg.kd.weight <= 1:
        problems.append(f"kd.weight: must lie in [0, 1], got {cfg.kd.weight}")
    if cfg.kd.temperature <= 0:
        problems.append(f"kd.temperature: must be positive, got {cfg.kd.temperature}")
    t = cfg.train
    if t.adapt_epochs > 0 and not (q.bits == 1 and cfg.act_bits() == 1 and q.float_shortcuts):
        problems.append("train.adapt_epochs: the float adaptation trains the float shortcuts of binary-input "
                        "layers; it needs --bits 1 with binary activations and quant.float_shortcuts=true")
    if cfg.calibration.images < 1 or cfg.calibration.batch_size < 1:
        problems.append("calibration.images and calibration.batch_size: must be positive")
    return problems
