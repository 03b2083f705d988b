"""The few-shot networks: a Conv4 or ResNet-12 encoder, a projection head and an N-way linear head.

``forward(x, output)`` with x float [B, C, S, S] in [0, 1] (normalised inside,
``(x - 0.5) / 0.5``) returns features [B, D] (``"features"``), projections
[B, P] (``"projection"``, for the contrastive losses) or logits [B, N]
(``"logits"``). BatchNorm keeps no running statistics (it always normalises
with the batch's own), the MAML convention: an inner loop then never writes
buffers, and a task's support set, query set or attacked view is normalised
by itself. The N-way head starts at zero so that every class starts equal
(the "zero trick" for MAML heads).

Adapted copies of the weights are plain dicts of tensors used through
``torch.func.functional_call`` (see ``adapted_call``).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

ENCODERS = ("conv4", "resnet12")


class TaskNorm(nn.BatchNorm2d):
    """BatchNorm without running statistics: the batch's own, unless ``fixed`` (mean, var) [C] are set.

    Fixed statistics make a classifier treat each image on its own: at test time
    they are the support set's (``record_statistics``), so that an attack on one
    query image, or on any subset of the query set (AutoAttack attacks subsets),
    cannot move the normalisation of the others.
    """

    def __init__(self, channels: int):
        super().__init__(channels, track_running_stats=False)
        self.fixed: tuple[Tensor, Tensor] | None = None
        self.recorded: tuple[Tensor, Tensor] | None = None
        self.recording = False

    def forward(self, x: Tensor) -> Tensor:
        if self.recording:
            self.recorded = (x.detach().mean(dim=(0, 2, 3)), x.detach().var(dim=(0, 2, 3), unbiased=False))
        if self.fixed is None:
            return super().forward(x)
        mean, var = self.fixed
        return F.batch_norm(x, mean, var, self.weight, self.bias, training=False, eps=self.eps)


def _norm(channels: int) -> TaskNorm:
    return TaskNorm(channels)


class Conv4(nn.Module):
    """4 x [3x3 conv -> BN -> ReLU -> 2x2 max-pool] (Vinyals et al.; MAML's encoder) -> flattened features."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        blocks, channels = [], in_channels
        for _ in range(4):
            blocks += [nn.Conv2d(channels, width, 3, padding=1), _norm(width), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x).flatten(1)


class ResidualBlock(nn.Module):
    """ResNet-12's block: 3 x (3x3 conv, BN) with leaky ReLU, a 1x1-conv shortcut, then 2x2 max-pool."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), _norm(channels), nn.LeakyReLU(0.1),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), _norm(channels), nn.LeakyReLU(0.1),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), _norm(channels))
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), _norm(channels))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x) + self.shortcut(x))


class ResNet12(nn.Module):
    """4 residual blocks of widths (w, 2.5w, 5w, 10w) (64-160-320-640 at w=64), global average pool."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        widths = [width, int(2.5 * width), 5 * width, 10 * width]
        blocks, channels = [], in_channels
        for w in widths:
            blocks.append(ResidualBlock(channels, w))
            channels = w
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x).mean(dim=(2, 3))


class FewShotNet(nn.Module):
    def __init__(self, *, encoder: str, in_channels: int, image_size: int, width: int, n_way: int,
                 projection_dim: int):
        super().__init__()
        self.encoder = Conv4(in_channels, width) if encoder == "conv4" else ResNet12(in_channels, width)
        with torch.no_grad():
            features = self.encoder(torch.zeros(2, in_channels, image_size, image_size)).shape[1]
        self.projector = nn.Sequential(nn.Linear(features, projection_dim), nn.ReLU(),
                                       nn.Linear(projection_dim, projection_dim))
        self.head = nn.Linear(features, n_way)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor, output: str = "logits") -> Tensor:
        features = self.encoder((x - 0.5) / 0.5)
        if output == "features":
            return features
        if output == "projection":
            return self.projector(features)
        return self.head(features)


Weights = dict[str, Tensor]


def adapted_call(net: FewShotNet, weights: Weights, x: Tensor, output: str = "logits") -> Tensor:
    """``net`` run with ``weights`` (an adapted copy of its parameters) in place of its own."""
    return functional_call(net, weights, (x,), {"output": output})


Statistics = list[tuple[Tensor, Tensor]]


def _task_norms(net: nn.Module) -> list[TaskNorm]:
    return [m for m in net.modules() if isinstance(m, TaskNorm)]


def record_statistics(net: FewShotNet, weights: Weights, images: Tensor) -> Statistics:
    """The (mean, var) every TaskNorm of ``net`` (run with ``weights``) sees on ``images``."""
    norms = _task_norms(net)
    for norm in norms:
        norm.recording = True
    try:
        with torch.no_grad():
            adapted_call(net, weights, images, "features")
    finally:
        for norm in norms:
            norm.recording = False
    recorded = [norm.recorded for norm in norms]
    for norm in norms:
        norm.recorded = None
    return recorded


@contextlib.contextmanager
def fixed_statistics(net: nn.Module, statistics: Statistics | None):
    """``net``'s TaskNorms normalising with ``statistics`` inside the block (the batch's own when None)."""
    norms = _task_norms(net)
    for norm, stats in zip(norms, statistics or [None] * len(norms), strict=True):
        norm.fixed = stats
    try:
        yield
    finally:
        for norm in norms:
            norm.fixed = None


class Adapted(nn.Module):
    """``net`` with fixed adapted ``weights`` (and optionally fixed normalisation ``statistics``), as an ordinary
    classifier module (for the attacks)."""

    def __init__(self, net: FewShotNet, weights: Weights, output: str = "logits",
                 statistics: Statistics | None = None):
        super().__init__()
        self.net = net
        self.weights = {k: v.detach() for k, v in weights.items()}
        self.output = output
        self.statistics = statistics

    def forward(self, x: Tensor) -> Tensor:
        with fixed_statistics(self.net, self.statistics):
            return adapted_call(self.net, self.weights, x, self.output)
