"""The ConvNet of the dataset-condensation literature (DC, DSA, DM, MTT, KFS).

``depth`` blocks of [3x3 conv with ``width`` channels -> norm -> ReLU -> 2x2
pool], then flatten -> linear. Condensation papers compare methods on exactly
this network, so the layer order and the module names follow the reference
implementation (``features.<i>``, ``classifier``): its checkpoints load
directly when the norm and pooling choices match. "instancenorm" is
``GroupNorm(width, width)`` (one group per channel, with affine), as there.

Unlike the reference, "layernorm" is ``GroupNorm(1, width)``: the same
per-sample normalisation over (C, H, W) with a per-channel affine, which does
not tie the weights to one image size.
"""

from __future__ import annotations

from torch import Tensor, nn

from mltk.nn.classifiers.architectures import option_problems_error, register_arch

NORMS = ("instancenorm", "batchnorm", "layernorm", "none")
POOLINGS = ("avgpool", "maxpool", "none")


def make_norm(norm: str, channels: int) -> nn.Module | None:
    """The normalisation layer for ``channels`` feature maps, or None for "none"."""
    if norm == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    if norm == "layernorm":
        return nn.GroupNorm(1, channels, affine=True)
    if norm == "none":
        return None
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def make_pool(pooling: str) -> nn.Module | None:
    """A 2x2 stride-2 pooling layer, or None for "none"."""
    if pooling == "avgpool":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if pooling == "maxpool":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    if pooling == "none":
        return None
    raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")


def final_feature_size(image_size: int, *, depth: int, pooling: str) -> int:
    """Side of the last feature map: each pooled block halves it (rounding down)."""
    return image_size if pooling == "none" else image_size // 2**depth


class ConvNet(nn.Module):
    """forward: [B, in_channels, S, S] -> logits [B, num_classes].

    embed: [B, in_channels, S, S] -> [B, width * s * s] with
    s = ``final_feature_size(S, depth=depth, pooling=pooling)``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        image_size: int,
        width: int,
        depth: int,
        norm: str,
        pooling: str,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth):
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=1))
            norm_layer = make_norm(norm, width)
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(nn.ReLU(inplace=True))
            pool = make_pool(pooling)
            if pool is not None:
                layers.append(pool)
            channels = width
        self.features = nn.Sequential(*layers)
        side = final_feature_size(image_size, depth=depth, pooling=pooling)
        self.feature_dim = width * side * side
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """[B, C, S, S] -> flattened last feature map [B, feature_dim]."""
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, S, S] -> logits [B, num_classes]."""
        return self.classifier(self.embed(x))


@register_arch(
    "convnet",
    description="Dataset-condensation ConvNet: depth x [conv3x3-norm-ReLU-pool2x2] -> linear "
    "(depth 3 for 32 px, 4 for 64 px)",
    choices={"norm": NORMS, "pooling": POOLINGS},
    maxima={"width": 4096, "depth": 64},
)
def convnet(
    num_classes: int,
    in_channels: int,
    image_size: int,
    *,
    width: int = 128,
    depth: int = 3,
    norm: str = "instancenorm",
    pooling: str = "avgpool",
) -> ConvNet:
    problems = []
    if width < 1:
        problems.append(f"width must be at least 1, got {width}")
    if depth < 1:
        problems.append(f"depth must be at least 1, got {depth}")
    elif final_feature_size(image_size, depth=depth, pooling=pooling) < 1:
        problems.append(
            f"depth {depth} halves the image {depth} times, so image_size must be at least "
            f"{2**depth}, got {image_size} (lower depth or set pooling='none')"
        )
    if problems:
        raise option_problems_error("convnet", problems)
    return ConvNet(
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        width=width,
        depth=depth,
        norm=norm,
        pooling=pooling,
    )
