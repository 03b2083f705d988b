"""The modules a quantized network is made of, in training form and in deployed form.

Training form (what QAT optimises; the float "shadow" weights stay):

* ``QuantizedLayer`` wraps a Conv2d or Linear. Its ``act_on`` and
  ``weight_on`` flags switch input and weight quantization on; the schedule
  flips them layer by layer. Off, it computes exactly what the wrapped layer
  computes.
* ``GatedActivation`` replaces a ReLU that feeds a binarized layer (the sign
  of a ReLU output would be +1 everywhere): the original ReLU until its
  consumer binarizes its input, then the method's activation (identity for
  XNOR-Net, RPReLU for ReActNet and BiTAT).

Deployed form (what an artifact holds and ``mltk eval`` runs):

* ``DeployedLayer``: ``y = conv(q(x), codes) * out_scale + out_bias`` with
  codes in {-1, +1} (1 bit) or integer levels (2/4/8 bits) unpacked from the
  artifact, q the input quantizer (sign(x - threshold), uniform levels, or
  none), and any BatchNorm that followed the layer folded into the per-channel
  ``out_scale`` and ``out_bias``. No float shadow weight exists in it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mltk.engines.quantize.quantizers import (
    ActivationBinarizer,
    RPReLU,
    UniformActivationQuantizer,
    binary_sign,
    uniform_quantize,
)
from mltk.engines.quantize.transforms import BinaryWeightQuantizer

QUANTIZABLE = (nn.Conv2d, nn.Linear)


def layer_op(layer: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``layer``'s own operation (conv with its stride/padding/groups, or linear) with another weight."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, bias)
    return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)


def in_features(layer: nn.Module) -> int:
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels


def out_features(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


class QuantizedLayer(nn.Module):
    """A Conv2d/Linear with switchable input and weight quantizers (training form).

    forward: x [B, I, H, W] (or [B, I]) -> the wrapped layer's output shape.
    """

    def __init__(self, layer: nn.Module, *, weight_quantizer: nn.Module, act_quantizer: nn.Module | None,
                 bits: int, act_bits: int):
        super().__init__()
        self.layer = layer
        self.weight_quantizer = weight_quantizer
        self.act_quantizer = act_quantizer
        self.bits = bits
        self.act_bits = act_bits
        self.register_buffer("weight_on", torch.tensor(False))
        self.register_buffer("act_on", torch.tensor(False))

    def quantize_input(self, x: Tensor) -> Tensor:
        if self.act_quantizer is not None and bool(self.act_on):
            return self.act_quantizer(x)
        return x

    def effective_weight(self) -> Tensor:
        if bool(self.weight_on):
            return self.weight_quantizer(self.layer.weight)
        return self.layer.weight

    def forward(self, x: Tensor) -> Tensor:
        return layer_op(self.layer, self.quantize_input(x), self.effective_weight(), self.layer.bias)

    @torch.no_grad()
    def deployable(self) -> tuple[Tensor, Tensor]:
        """(codes or integer levels of the weight's shape, per-output scale [O])."""
        quantizer = self.weight_quantizer
        if isinstance(quantizer, BinaryWeightQuantizer):
            return quantizer.codes_and_scale(self.layer.weight)
        return quantizer.levels_and_scale(self.layer.weight)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, act_bits={self.act_bits}"


class GatedActivation(nn.Module):
    """The original activation until ``on``; then ``binary_form`` (Identity or RPReLU)."""

    def __init__(self, original: nn.Module, binary_form: nn.Module):
        super().__init__()
        self.original = original
        self.binary_form = binary_form
        self.register_buffer("on", torch.tensor(False))

    def forward(self, x: Tensor) -> Tensor:
        return self.binary_form(x) if bool(self.on) else self.original(x)


def make_act_quantizer(kind: str, channels: int, *, ste: str, act_bits: int) -> nn.Module | None:
    """The input quantizer of a layer: "sign", "rsign", "uniform" or "none"."""
    if kind == "none":
        return None
    if kind in ("sign", "rsign"):
        return ActivationBinarizer(channels, learn_threshold=kind == "rsign", ste=ste)
    if kind == "uniform":
        return UniformActivationQuantizer(bits=act_bits)
    raise ValueError(f"unknown activation quantizer {kind!r}")


def make_binary_form(kind: str, channels: int) -> nn.Module:
    if kind == "identity":
        return nn.Identity()
    if kind == "rprelu":
        return RPReLU(channels)
    raise ValueError(f"unknown activation {kind!r}; expected identity or rprelu")


# ---------------------------------------------------------------- deployed form


class DeployedInputQuantizer(nn.Module):
    """The inference-time input quantizer: sign(x - threshold) or uniform levels; no gradients."""

    def __init__(self, kind: str, channels: int, act_bits: int):
        super().__init__()
        self.kind = kind
        self.act_bits = act_bits
        if kind in ("sign", "rsign"):
            self.register_buffer("threshold", torch.zeros(channels))
        elif kind == "uniform":
            self.register_buffer("step", torch.ones(()))
        else:
            raise ValueError(f"unknown activation quantizer {kind!r}")

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "uniform":
            dequantized, _ = uniform_quantize(x, self.step, bits=self.act_bits)
            return dequantized
        return binary_sign(x, self.threshold.view(1, -1, *([1] * (x.dim() - 2))))


class DeployedLayer(nn.Module):
    """y = op(q(x), codes) * out_scale + out_bias, op the original conv/linear (deployed form).

    ``codes`` is a non-persistent buffer: the artifact stores it packed (8
    binary weights per byte) and the loader unpacks it into this buffer.
    """

    def __init__(self, layer: nn.Module, *, bits: int, act_kind: str, act_bits: int):
        super().__init__()
        self.op = _OpSpec.of(layer)
        self.bits = bits
        self.weight_shape = tuple(layer.weight.shape)
        channels, outputs = in_features(layer), out_features(layer)
        self.register_buffer("codes", torch.zeros(self.weight_shape), persistent=False)
        self.register_buffer("out_scale", torch.ones(outputs))
        self.register_buffer("out_bias", torch.zeros(outputs))
        self.input_quantizer = None if act_kind == "none" else DeployedInputQuantizer(act_kind, channels, act_bits)

    def forward(self, x: Tensor) -> Tensor:
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        y = self.op(x, self.codes)
        shape = (1, -1) + (1,) * (y.dim() - 2)
        return y * self.out_scale.view(shape) + self.out_bias.view(shape)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, weight={self.weight_shape}, {self.op}"


class _OpSpec(nn.Module):
    """The hyperparameters of a conv or linear, applied to any weight (no parameters of its own)."""

    def __init__(self, linear: bool, stride=1, padding=0, dilation=1, groups=1):
        super().__init__()
        self.linear = linear
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups

    @classmethod
    def of(cls, layer: nn.Module) -> _OpSpec:
        if isinstance(layer, nn.Linear):
            return cls(True)
        return cls(False, layer.stride, layer.padding, layer.dilation, layer.groups)

    def forward(self, x: Tensor, weight: Tensor) -> Tensor:
        if self.linear:
            return F.linear(x, weight)
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        if self.linear:
            return "linear"
        return f"stride={self.stride}, padding={self.padding}, groups={self.groups}"
