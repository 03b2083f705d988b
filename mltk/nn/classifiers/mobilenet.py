"""torchvision's MobileNetV2 and MobileNetV3, adapted to small and non-RGB inputs.

The networks are torchvision's own classes (subclassed only to add
``embed``, in ``mobilenet_networks``, imported on first build so that
torchvision does not slow every command's start), so their state_dict keys
are torchvision's and a torchvision checkpoint loads into them unchanged. Two adaptations, both in the stem:

* ``stem_stride=1`` for 32 px inputs: with the ImageNet stride of 2 the total
  stride of 32 leaves a 1x1 map for a CIFAR image; stride 1 leaves 2x2.
  Changing the stride changes no weight shapes, so ImageNet weights still load.
* ``in_channels != 3`` replaces the first conv by one with the same output
  channels (the rest of the network keeps its pretrained-compatible shapes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from mltk.nn.classifiers.architectures import option_problems_error, register_arch

if TYPE_CHECKING:
    from mltk.nn.classifiers.mobilenet_networks import EmbeddingMobileNetV2, EmbeddingMobileNetV3

STEM_STRIDES = (1, 2)
STEM_HELP = "stem_stride=1 for 32 px inputs"
# width_mult 8 is already a 137M-parameter MobileNetV2; beyond it is a typo, not a model.
MOBILENET_MAXIMA = {"width_mult": 8.0}


def adapt_stem(stem_conv: nn.Conv2d, *, in_channels: int, stride: int) -> nn.Conv2d:
    """The first conv, with ``in_channels`` inputs and ``stride``; kept as is when they match."""
    if stem_conv.in_channels == in_channels:
        stem_conv.stride = (stride, stride)
        return stem_conv
    replacement = nn.Conv2d(
        in_channels,
        stem_conv.out_channels,
        kernel_size=stem_conv.kernel_size,
        stride=stride,
        padding=stem_conv.padding,
        bias=stem_conv.bias is not None,
    )
    # torchvision's own initialisation for MobileNet convs.
    nn.init.kaiming_normal_(replacement.weight, mode="fan_out")
    if replacement.bias is not None:
        nn.init.zeros_(replacement.bias)
    return replacement


def _check_options(arch: str, *, width_mult: float, stem_stride: int, dropout: float) -> None:
    problems = []
    if width_mult <= 0:
        problems.append(f"width_mult must be positive, got {width_mult}")
    if stem_stride not in STEM_STRIDES:
        problems.append(f"stem_stride must be 1 (32 px inputs) or 2 (ImageNet), got {stem_stride}")
    if not 0 <= dropout < 1:
        problems.append(f"dropout must be in [0, 1), got {dropout}")
    if problems:
        raise option_problems_error(arch, problems)


def _with_stem(net: nn.Module, *, in_channels: int, stem_stride: int) -> nn.Module:
    # features[0] is torchvision's Conv2dNormActivation; [0] inside it is the conv.
    stem = net.features[0]
    stem[0] = adapt_stem(stem[0], in_channels=in_channels, stride=stem_stride)
    return net


@register_arch(
    "mobilenet_v2",
    description=f"torchvision MobileNetV2, 3.5M params at 1000 classes; {STEM_HELP}",
    maxima=MOBILENET_MAXIMA,
)
def mobilenet_v2(
    num_classes: int,
    in_channels: int,
    image_size: int,
    *,
    width_mult: float = 1.0,
    stem_stride: int = 2,
    dropout: float = 0.2,
    tf_padding: bool = False,
) -> EmbeddingMobileNetV2:
    """``tf_padding``: strided convolutions pad like TF's SAME (weights imported from TFLite)."""
    _check_options("mobilenet_v2", width_mult=width_mult, stem_stride=stem_stride, dropout=dropout)
    from mltk.nn.classifiers.mobilenet_networks import EmbeddingMobileNetV2

    net = EmbeddingMobileNetV2(num_classes=num_classes, width_mult=width_mult, dropout=dropout)
    net = _with_stem(net, in_channels=in_channels, stem_stride=stem_stride)
    if tf_padding:
        from mltk.nn.classifiers.tf_padding import use_tf_same_padding

        use_tf_same_padding(net)
    return net


def _mobilenet_v3(variant: str, num_classes: int, in_channels: int, *, width_mult: float, stem_stride: int,
                  dropout: float) -> EmbeddingMobileNetV3:
    _check_options(variant, width_mult=width_mult, stem_stride=stem_stride, dropout=dropout)
    from mltk.nn.classifiers.mobilenet_networks import EmbeddingMobileNetV3

    net = EmbeddingMobileNetV3(variant=variant, num_classes=num_classes, width_mult=width_mult, dropout=dropout)
    return _with_stem(net, in_channels=in_channels, stem_stride=stem_stride)


@register_arch(
    "mobilenet_v3_small",
    description=f"torchvision MobileNetV3-Small, 2.5M params at 1000 classes; {STEM_HELP}",
    maxima=MOBILENET_MAXIMA,
)
def mobilenet_v3_small(
    num_classes: int,
    in_channels: int,
    image_size: int,
    *,
    width_mult: float = 1.0,
    stem_stride: int = 2,
    dropout: float = 0.2,
) -> EmbeddingMobileNetV3:
    return _mobilenet_v3("mobilenet_v3_small", num_classes, in_channels, width_mult=width_mult,
                         stem_stride=stem_stride, dropout=dropout)


@register_arch(
    "mobilenet_v3_large",
    description=f"torchvision MobileNetV3-Large, 5.5M params at 1000 classes; {STEM_HELP}",
    maxima=MOBILENET_MAXIMA,
)
def mobilenet_v3_large(
    num_classes: int,
    in_channels: int,
    image_size: int,
    *,
    width_mult: float = 1.0,
    stem_stride: int = 2,
    dropout: float = 0.2,
) -> EmbeddingMobileNetV3:
    return _mobilenet_v3("mobilenet_v3_large", num_classes, in_channels, width_mult=width_mult,
                         stem_stride=stem_stride, dropout=dropout)
