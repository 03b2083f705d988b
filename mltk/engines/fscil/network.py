"""The FSCIL network: a CIFAR-style ResNet whose convs (and head) may be masked, a linear head for the
base session, and the class prototypes that nearest-class-mean classification reads.

``NetworkSpec(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2))`` is the
ResNet-18 with a 3x3 stem of SoftNet's ``SigResnet18_small_v1``; residual
block ``j`` of stage ``i`` is ``stages.i.j`` (the official ``layer4.1`` is
``stages.3.1``). ``masking="none"`` builds plain ``nn.Conv2d`` layers: the
dense network of the fine-tuning and frozen + NCM baselines, and the
reference for the cost of the masks.

Shapes: images float [B, C, H, W] in [0, 1] -> features [B, widths[-1]],
logits [B, num_base_classes].
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mltk.engines.fscil.masked_layers import MaskedConv2d, MaskedLinear

Masking = Literal["soft", "hard", "none"]


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    in_channels: int
    num_base_classes: int
    num_classes: int  # every class of every session: the prototype table's rows
    widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    masking: Masking = "soft"
    capacity: float = 0.7
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)

    @classmethod
    def from_dict(cls, values: dict) -> NetworkSpec:
        values = dict(values)
        for key in ("widths", "blocks", "mean", "std"):
            values[key] = tuple(values[key])
        return cls(**values)


def _conv(spec: NetworkSpec, cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Module:
    padding = kernel // 2
    if spec.masking == "none":
        return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
    return MaskedConv2d(cin, cout, kernel, stride=stride, padding=padding, capacity=spec.capacity,
                        minor="soft" if spec.masking == "soft" else "zero")


class BasicBlock(nn.Module):
    def __init__(self, spec: NetworkSpec, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = _conv(spec, cin, cout, 3, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv(spec, cout, cout, 3)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(_conv(spec, cin, cout, 1, stride), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FscilNetwork(nn.Module):
    def __init__(self, spec: NetworkSpec):
        super().__init__()
        self.spec = spec
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, -1, 1, 1))
        self.stem = _conv(spec, spec.in_channels, spec.widths[0], 3)
        self.stem_bn = nn.BatchNorm2d(spec.widths[0])
        stages, cin = [], spec.widths[0]
        for index, (width, count) in enumerate(zip(spec.widths, spec.blocks, strict=True)):
            blocks = []
            for j in range(count):
                blocks.append(BasicBlock(spec, cin, width, 2 if index > 0 and j == 0 else 1))
                cin = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        if spec.masking == "none":
            self.head = nn.Linear(cin, spec.num_base_classes)
        else:
            self.head = MaskedLinear(cin, spec.num_base_classes, capacity=spec.capacity,
                                     minor="soft" if spec.masking == "soft" else "zero")
        # Nearest-class-mean state: one unit-norm prototype per class of the plan, and which are set.
        self.register_buffer("prototypes", torch.zeros(spec.num_classes, cin))
        self.register_buffer("prototype_set", torch.zeros(spec.num_classes, dtype=torch.bool))

    @property
    def feature_dim(self) -> int:
        return self.spec.widths[-1]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        x = F.relu(self.stem_bn(self.stem(x)))
        for stage in self.stages:
            x = stage(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features [B, D], base-class logits [B, num_base_classes])."""
        feats = self.features(images)
        return feats, self.head(feats)


def block_names(model: FscilNetwork) -> list[str]:
    """The residual blocks by name, in order (``stages.0.0`` ...)."""
    return [f"stages.{i}.{j}" for i, stage in enumerate(model.stages) for j in range(len(stage))]


def resolve_layers(model: FscilNetwork, names: tuple[str, ...]) -> list[str]:
    """Module names of the convs that incremental sessions train: every conv inside each named module
    (``last`` = the last residual block)."""
    modules = dict(model.named_modules())
    chosen = []
    for name in names:
        name = block_names(model)[-1] if name == "last" else name
        if name not in modules:
            raise KeyError(name)
        for sub, module in modules[name].named_modules():
            if isinstance(module, nn.Conv2d):
                chosen.append(f"{name}.{sub}" if sub else name)
    return chosen
