"""ResNet-18 for small images (CIFAR, SVHN, TinyImageNet).

The ImageNet ResNet-18 (He et al. 2016) with the stem the CIFAR literature
uses: one 3x3 stride-1 conv and no max-pool, because a 7x7 stride-2 conv plus
a max-pool would shrink a 32 px image to 8 px before the first block. Four
stages of two BasicBlocks (64, 128, 256, 512 channels), global average pool,
linear. Module names follow the widely shared CIFAR implementation (``conv1``,
``bn1``, ``layer<k>.<i>.conv1/bn1/conv2/bn2``, ``shortcut.0/1``, ``linear``) so
its checkpoints load. "instancenorm" is ``GroupNorm(C, C)`` with affine, as in
the dataset-condensation code, where batch statistics would leak between the
few synthetic images of a class.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mltk.nn.classifiers.architectures import register_arch

NORMS = ("batchnorm", "instancenorm")
STAGE_WIDTHS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = (2, 2, 2, 2)


def make_norm(norm: str, channels: int) -> nn.Module:
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    if norm == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


class BasicBlock(nn.Module):
    """Two 3x3 convs and a residual: [B, C_in, H, W] -> [B, C_out, H/stride, W/stride].

    The shortcut is a 1x1 conv and norm only where the shape changes
    (option B of the ResNet paper); otherwise it is the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = make_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(
            out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False
        )
        self.bn2 = make_norm(norm, out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                make_norm(norm, out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet18(nn.Module):
    """forward: [B, in_channels, S, S] -> logits [B, num_classes]; embed: -> [B, 512]."""

    def __init__(self, *, num_classes: int, in_channels: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, STAGE_WIDTHS[0], kernel_size=3, stride=1, padding=1, bias=False
        )
        self.bn1 = make_norm(norm, STAGE_WIDTHS[0])
        stages = []
        channels = STAGE_WIDTHS[0]
        for index, (width, blocks) in enumerate(zip(STAGE_WIDTHS, BLOCKS_PER_STAGE, strict=True)):
            first_stride = 1 if index == 0 else 2
            stage = []
            for block in range(blocks):
                stride = first_stride if block == 0 else 1
                stage.append(BasicBlock(channels, width, stride=stride, norm=norm))
                channels = width
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(STAGE_WIDTHS[-1], num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """[B, C, S, S] -> globally average-pooled stage-4 features [B, 512]."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        # Global pooling (not the fixed 4x4 pool of 32 px code) so 64 px works too.
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, S, S] -> logits [B, num_classes]."""
        return self.linear(self.embed(x))


@register_arch(
    "resnet18",
    description="CIFAR ResNet-18: BasicBlock [2,2,2,2], 3x3 stride-1 stem, no max-pool, "
    "11.2M params at 10 classes",
    choices={"norm": NORMS},
)
def resnet18(
    num_classes: int, in_channels: int, image_size: int, *, norm: str = "batchnorm"
) -> CifarResNet18:
    return CifarResNet18(num_classes=num_classes, in_channels=in_channels, norm=norm)
