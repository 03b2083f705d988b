"""The CIFAR ResNets of He et al. (2016, section 4.2): ResNet-20/32/44/56/110.

A 3x3 conv with 16 channels, then three stages of n BasicBlocks with 16, 32
and 64 channels (the first block of stages 2 and 3 halves the resolution),
global average pool, linear: 6n + 2 weighted layers. Shortcuts use option A,
which has no parameters: where the shape changes, the input is subsampled
with stride 2 and zero-padded with the missing channels, half before and half
after the existing ones. That channel placement and the module names
(``conv1``, ``bn1``, ``layer<k>.<i>.conv1/bn1/conv2/bn2``, ``linear``) match
akamaster/pytorch_resnet_cifar10, so its checkpoints load once the
``module.`` prefix of their DataParallel keys is stripped.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mltk.nn.classifiers.architectures import register_arch

STAGE_WIDTHS = (16, 32, 64)


def kaiming_init(module: nn.Module) -> None:
    """He-normal weights for every conv and linear layer, as in the paper."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight)


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: [B, C_in, H, W] -> [B, C_out, ceil(H/stride), ceil(W/stride)].

    Subsamples every ``stride``-th pixel and pads channels with zeros, split
    evenly before and after; it holds no parameters and no buffers.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option A can only add channels: {in_channels} -> {out_channels}")
        self.stride = stride
        self.pad_before = (out_channels - in_channels) // 2
        self.pad_after = out_channels - in_channels - self.pad_before

    def forward(self, x: Tensor) -> Tensor:
        subsampled = x[:, :, :: self.stride, :: self.stride]
        # F.pad lists dimensions last-first: (W left, W right, H top, H bottom, C before, C after).
        return F.pad(subsampled, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad_channels=({self.pad_before}, {self.pad_after})"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a residual: [B, C_in, H, W] -> [B, C_out, H/stride, W/stride]."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(
            out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False
        )
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class OptionAResNet(nn.Module):
    """forward: [B, in_channels, S, S] -> logits [B, num_classes]; embed: -> [B, 64]."""

    def __init__(self, *, blocks_per_stage: int, num_classes: int, in_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, STAGE_WIDTHS[0], kernel_size=3, stride=1, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        stages = []
        channels = STAGE_WIDTHS[0]
        for index, width in enumerate(STAGE_WIDTHS):
            first_stride = 1 if index == 0 else 2
            stage = []
            for block in range(blocks_per_stage):
                stride = first_stride if block == 0 else 1
                stage.append(BasicBlock(channels, width, stride=stride))
                channels = width
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(STAGE_WIDTHS[-1], num_classes)
        self.apply(kaiming_init)

    def embed(self, x: Tensor) -> Tensor:
        """[B, C, S, S] -> globally average-pooled stage-3 features [B, 64]."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, S, S] -> logits [B, num_classes]."""
        return self.linear(self.embed(x))


def _description(depth: int) -> str:
    return f"CIFAR ResNet-{depth} (He et al.), 16/32/64 channels, option-A shortcuts"


@register_arch("resnet20", description=_description(20) + " (0.27M params at 10 classes)")
def resnet20(num_classes: int, in_channels: int, image_size: int) -> OptionAResNet:
    return OptionAResNet(blocks_per_stage=3, num_classes=num_classes, in_channels=in_channels)


@register_arch("resnet32", description=_description(32) + " (0.46M params at 10 classes)")
def resnet32(num_classes: int, in_channels: int, image_size: int) -> OptionAResNet:
    return OptionAResNet(blocks_per_stage=5, num_classes=num_classes, in_channels=in_channels)


@register_arch("resnet44", description=_description(44) + " (0.66M params at 10 classes)")
def resnet44(num_classes: int, in_channels: int, image_size: int) -> OptionAResNet:
    return OptionAResNet(blocks_per_stage=7, num_classes=num_classes, in_channels=in_channels)


@register_arch("resnet56", description=_description(56) + " (0.85M params at 10 classes)")
def resnet56(num_classes: int, in_channels: int, image_size: int) -> OptionAResNet:
    return OptionAResNet(blocks_per_stage=9, num_classes=num_classes, in_channels=in_channels)


@register_arch("resnet110", description=_description(110) + " (1.7M params at 10 classes)")
def resnet110(num_classes: int, in_channels: int, image_size: int) -> OptionAResNet:
    return OptionAResNet(blocks_per_stage=18, num_classes=num_classes, in_channels=in_channels)
