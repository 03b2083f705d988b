"""Padding like TensorFlow's ``SAME`` in a torch convolution.

TF's ``SAME`` pads a strided convolution asymmetrically (the odd row and
column go to the bottom and right) where torch pads every side alike; a
network whose weights come from TF (a TFLite MobileNetV2) sees shifted
inputs at every stride-2 layer unless it pads as TF does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding that TF's ``SAME`` adds along one axis of length ``size``.

    The output has ceil(size / stride) positions; the total padding needed is
    split with the odd row or column after (at the bottom or right).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_like_tf_same(conv: nn.Conv2d, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    x = inputs[0]
    top, bottom = tf_same_padding(x.shape[-2], conv.kernel_size[0], conv.stride[0])
    left, right = tf_same_padding(x.shape[-1], conv.kernel_size[1], conv.stride[1])
    return (F.pad(x, (left, right, top, bottom)),) + inputs[1:]


def use_tf_same_padding(model: nn.Module) -> nn.Module:
    """Make every strided convolution of ``model`` pad like TF's ``SAME``; in place, returns ``model``.

    The padding moves into a forward pre-hook, so the state_dict keys stay
    torchvision's; an architecture option (``mobilenet_v2``'s ``tf_padding``)
    applies it at build time, so a model rebuilt from its card pads alike.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and max(module.stride) > 1 and not getattr(module, "pads_like_tf", False):
            module.padding = (0, 0)
            module.register_forward_pre_hook(_pad_like_tf_same)
            module.pads_like_tf = True  # a second call must not pad twice
    return model
