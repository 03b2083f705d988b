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

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mltk.engines.quantize.quantizers import (
    ActivationBinarizer,
    RPReLU,
    UniformActivationQuantizer,
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


class FloatShortcut(nn.Module):
    """The real-valued path around a binary-input layer (Bi-Real Net / ReActNet style); no parameters.

    A binary-input layer computes ``BN(conv(sign(x)))``; with a shortcut it
    computes ``BN(conv(sign(x))) + shortcut(x)`` on the float ``x``, so the
    information the sign throws away still reaches the layers above, and
    their gradients reach the layers below. The shortcut is the cheapest map
    from the layer's input shape to its output shape:

    * spatial (``pool``, strided convolutions): average pooling to the
      output size (a stride-2 layer on an even-sized input: mean of 2x2
      windows);
    * channels, I -> O: identity when I == O (depthwise convs); repetition
      when O > I (input channel ``c`` feeds outputs ``c * k .. c * k + k - 1``
      when O = k * I; in general output ``o`` copies input ``o * I // O``);
      the mean of contiguous groups of I / O channels when I > O (adaptive
      average pooling along the channel axis when I is not a multiple of O).

    forward(x [B, I, H, W] or [B, I], size (H', W') or None) -> [B, O, H', W'] (or [B, O]).
    """

    def __init__(self, in_features: int, out_features: int, *, pool: bool = False):
        super().__init__()
        self.in_features, self.out_features, self.pool = in_features, out_features, pool
        self.register_buffer("index", (torch.arange(out_features) * in_features) // out_features, persistent=False)

    def channels(self) -> str:
        """How channels map: identity, repeat, group-mean or adaptive-mean."""
        i, o = self.in_features, self.out_features
        if i == o:
            return "identity"
        if o > i:
            return "repeat"
        return "group-mean" if i % o == 0 else "adaptive-mean"

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        if self.pool and size is not None:
            x = F.adaptive_avg_pool2d(x, tuple(size))
        i, o = self.in_features, self.out_features
        if i == o:
            return x
        if o > i:
            return x.index_select(1, self.index)
        if i % o == 0:
            return _group_mean(x.unflatten(1, (o, i // o)))
        if x.dim() == 4:
            return F.adaptive_avg_pool3d(x.unsqueeze(1), (o, x.shape[-2], x.shape[-1])).squeeze(1)
        return F.adaptive_avg_pool1d(x.unsqueeze(1), o).squeeze(1)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features} ({self.channels()}{', avgpool' * self.pool})"


def _group_mean(groups: Tensor) -> Tensor:
    """The mean over dim 2 of [B, O, G, ...], summed member by member: elementwise adds in a fixed order
    round alike whatever the memory layout, where a reduction's order (so its last bit) follows the strides.
    The deployed network's integer products leave their outputs channels-last (DeployedLayer.binary_product)
    and must give the float path's values bit for bit."""
    total = groups.select(2, 0).clone()
    for member in range(1, groups.shape[2]):
        total.add_(groups.select(2, member))
    return total.div_(groups.shape[2])


class QuantizedLayer(nn.Module):
    """A Conv2d/Linear with switchable input and weight quantizers (training form).

    forward: x [B, I, H, W] (or [B, I]) -> the wrapped layer's output shape.

    With a ``shortcut`` (binary-input layers under ``quant.float_shortcuts``)
    the BatchNorm that follows the layer moves in as ``norm`` (its place in
    the network becomes an Identity) and, once the inputs are quantized, the
    output is ``norm(op(q(x), w)) + shortcut(x)``; before that the layer is
    the float one, ``norm(op(x, w))``. ``shortcut_on`` (the float adaptation
    phase, ``train.adapt_epochs``) adds the shortcut before that:
    ``norm(op(x, w)) + shortcut(x)`` with float inputs and weights. It is not
    saved: the schedule sets it again on resume.
    """

    def __init__(self, layer: nn.Module, *, weight_quantizer: nn.Module, act_quantizer: nn.Module | None,
                 bits: int, act_bits: int, shortcut: FloatShortcut | None = None, norm: nn.Module | None = None):
        super().__init__()
        self.layer = layer
        self.norm = norm
        self.shortcut = shortcut
        self.weight_quantizer = weight_quantizer
        self.act_quantizer = act_quantizer
        self.bits = bits
        self.act_bits = act_bits
        self.register_buffer("weight_on", torch.tensor(False))
        self.register_buffer("act_on", torch.tensor(False))
        self.register_buffer("shortcut_on", torch.tensor(False), persistent=False)

    def quantize_input(self, x: Tensor) -> Tensor:
        if self.act_quantizer is not None and bool(self.act_on):
            return self.act_quantizer(x)
        return x

    def effective_weight(self) -> Tensor:
        if bool(self.weight_on):
            return self.weight_quantizer(self.layer.weight)
        return self.layer.weight

    def forward(self, x: Tensor) -> Tensor:
        y = layer_op(self.layer, self.quantize_input(x), self.effective_weight(), self.layer.bias)
        if self.norm is not None:
            y = self.norm(y)
        if self.shortcut is not None and (bool(self.act_on) or bool(self.shortcut_on)):
            y = y + self.shortcut(x, y.shape[-2:] if y.dim() == 4 else None)
        return y

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
        return FastInferenceRPReLU(channels)
    raise ValueError(f"unknown activation {kind!r}; expected identity or rprelu")


class FastInferenceRPReLU(RPReLU):
    """:class:`RPReLU` (same parameters, same values) whose forward without autograd is one PReLU kernel.

    RPReLU's ``where(s >= 0, s, s * slope) + shift_out`` (s = x - shift_in)
    builds a bool mask and a product tensor and runs a broadcasting ``where``:
    on one CPU thread up to 19x the time of ``prelu(s, slope) + shift_out``
    at batch 64, the largest cost of the deployed BiTAT/ReActNet network
    after its convolutions (benchmarks/quantize_speed.py). With autograd on (QAT) the parent's
    forward runs, so its gradient is untouched.

    Same values: prelu is ``s > 0 ? s : slope * s``, the same product where
    s < 0, and s itself where s > 0. Where s is zero both give a zero (prelu's
    may carry the other sign) and adding shift_out gives shift_out, except
    a zero plus a shift_out of exactly -0.0, whose sign would depend on the
    zero's: that (never seen after training, but possible) takes the parent's
    path, so outputs are bit for bit the parent's. So do inputs of another
    dtype than the parameters (prelu does not promote as the subtraction does).
    """

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() or x.dtype != self.slope.dtype or x.dim() < 2 \
                or bool(torch.signbit(self.shift_out).logical_and(self.shift_out == 0).any()):
            return super().forward(x)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return F.prelu(x - self.shift_in.view(shape), self.slope).add_(self.shift_out.view(shape))


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
        return deployed_sign(x, self.threshold.view(1, -1, *([1] * (x.dim() - 2))))


def deployed_sign(x: Tensor, threshold: Tensor, out: Tensor | None = None) -> Tensor:
    """+1 where x >= threshold, -1 elsewhere: :func:`binary_sign`'s values, computed faster (no gradient).

    The comparison writes its 0/1 straight into a float tensor of x's dtype
    (or into ``out``, of x's shape: the int8 matrix products pass an int8
    one), then two in-place passes make it -1/+1. ``binary_sign`` compares
    into a bool tensor and converts that to float: on one CPU thread, at
    batch 64, those two passes took 3-6x as long as this whole function.
    Same comparison, same arithmetic on exact 0/1, so the same values.
    """
    out = torch.empty_like(x) if out is None else out
    torch.ge(x, threshold, out=out)
    return out.mul_(2).sub_(1)


class DeployedLayer(nn.Module):
    """y = op(q(x), codes) * out_scale + out_bias [+ shortcut(x)], op the original conv/linear (deployed form).

    The float shortcut (a parameter-free :class:`FloatShortcut`, present when
    the plan gives the layer one) adds the unquantized input after the folded
    BatchNorm, exactly where the training form adds it.

    ``codes`` is a non-persistent buffer: the artifact stores it packed (8
    binary weights per byte) and the loader unpacks it into this buffer.
    """

    def __init__(self, layer: nn.Module, *, bits: int, act_kind: str, act_bits: int,
                 shortcut: FloatShortcut | None = None):
        super().__init__()
        self.op = _OpSpec.of(layer)
        self.bits = bits
        self.weight_shape = tuple(layer.weight.shape)
        channels, outputs = in_features(layer), out_features(layer)
        self.register_buffer("codes", torch.zeros(self.weight_shape), persistent=False)
        self.register_buffer("out_scale", torch.ones(outputs))
        self.register_buffer("out_bias", torch.zeros(outputs))
        self.input_quantizer = None if act_kind == "none" else DeployedInputQuantizer(act_kind, channels, act_bits)
        self.shortcut = shortcut
        # sign inputs and binary weights of a 1x1 convolution or a linear layer: one int8 matrix product
        # (see binary_product); False runs the float operation on the +-1 values, which gives the same output
        self.integer_product = bits == 1 and act_kind in ("sign", "rsign") and self.op.is_matrix_product(
            self.weight_shape)
        self._int8_codes: tuple[tuple, Tensor] | None = None  # (the codes' identity, their int8 [I, O] copy)

    def forward(self, x: Tensor) -> Tensor:
        if self.integer_product and integer_product_applies(x):
            y = self.binary_product(x)
        else:
            q = self.input_quantizer(x) if self.input_quantizer is not None else x
            y = self.op(q, self.codes)
        shape = (1, -1) + (1,) * (y.dim() - 2)
        # In place on the convolution's fresh output: the same multiply, then the same add, as
        # ``y * scale + bias + shortcut``, without allocating (and first touching) two or three more
        # output-sized tensors. Not addcmul: its fused multiply-add rounds once, so values would move by an ulp.
        y = _multiply(y, self.out_scale.view(shape))
        y = _add(y, self.out_bias.view(shape))
        if self.shortcut is not None:
            y = _add(y, self.shortcut(x, y.shape[-2:] if y.dim() == 4 else None))
        return y

    def binary_product(self, x: Tensor) -> Tensor:
        """``op(sign(x - threshold), codes)`` as an int8 x int8 -> int32 matrix product.

        Every term is +-1, so the int32 sums are exact, and so is their conversion to float (they are far
        below 2^24): the output equals the float operation's bit for bit. On a CPU with int8 dot-product
        instructions the product runs several times faster than the float32 one it replaces (the pointwise
        convolutions are most of MobileNetV2's time; benchmarks/results/quantize_speed.md). A 1x1
        convolution's rows are the pixels: the signs are written channels-last, and the output keeps that
        layout (a [B, O, H, W] view with channels-last strides) rather than paying a copy back.
        """
        threshold = self.input_quantizer.threshold  # [C]: broadcasts over the channels, the last axis here
        rows = x if x.dim() == 2 else x.permute(0, 2, 3, 1)
        signs = deployed_sign(rows, threshold, out=torch.empty(rows.shape, dtype=torch.int8, device=x.device))
        product = torch._int_mm(signs.view(-1, x.shape[1]), self._codes_as_int8()).to(x.dtype)
        if x.dim() == 2:
            return product
        b, _, h, w = x.shape
        return product.view(b, h, w, -1).permute(0, 3, 1, 2)

    def _codes_as_int8(self) -> Tensor:
        """The codes as an int8 [I, O] matrix, made again whenever the codes buffer changes (the loader fills
        it in place after construction). Tensors made under ``torch.inference_mode`` keep no version counter:
        for those only a new buffer is noticed, not an in-place change."""
        version = None if self.codes.is_inference() else self.codes._version
        identity = (self.codes.data_ptr(), version, self.codes.device)
        if self._int8_codes is None or self._int8_codes[0] != identity:
            matrix = self.codes.reshape(self.weight_shape[0], -1).t().to(torch.int8).contiguous()
            self._int8_codes = (identity, matrix)
        return self._int8_codes[1]

    def extra_repr(self) -> str:
        return f"bits={self.bits}, weight={self.weight_shape}, {self.op}" + ", int8 product" * self.integer_product


# Without int8 dot-product instructions (VNNI) oneDNN's int8 product costs a fixed ~0.1-0.3 ms a call: slower
# than float32 below about 64 rows (a [1, 320] x [320, 1280] product 10x slower), about even at 64, 0.4-0.5x at
# 4096 (measured with ONEDNN_MAX_CPU_ISA=AVX2). With AVX-512 VNNI it is 0.25-0.7x from one row on.
MIN_ROWS_WITHOUT_VNNI = 64


def integer_product_applies(x: Tensor) -> bool:
    """Whether :meth:`DeployedLayer.binary_product` may run on ``x``: float32 on a CPU whose PyTorch has a
    working int8 matrix product, enough rows (pixels times batch) for it to pay, outside tracing and export
    (whose graphs keep the portable float operation)."""
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() not in (2, 4):
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    if x.numel() // x.shape[1] < MIN_ROWS_WITHOUT_VNNI and not _cpu_has_vnni():
        return False
    return int8_matrix_product_works()


@functools.cache
def _cpu_has_vnni() -> bool:
    probe = getattr(torch.cpu, "_is_vnni_supported", None)  # private; absent in older PyTorch: assume not
    return bool(probe()) if probe is not None else False


@functools.cache
def int8_matrix_product_works() -> bool:
    """``torch._int_mm`` (a private PyTorch function) exists here and multiplies int8 matrices exactly."""
    product = getattr(torch, "_int_mm", None)
    if product is None:
        return False
    a = torch.tensor([[1, -1] * 8] * 32, dtype=torch.int8)
    b = torch.tensor([[1] * 8, [-1] * 8] * 8, dtype=torch.int8)
    try:
        got = product(a, b)
    except RuntimeError:
        return False
    return got.dtype == torch.int32 and torch.equal(got, torch.full((32, 8), 16, dtype=torch.int32))


def _in_place_keeps_dtype(y: Tensor, other: Tensor) -> bool:
    """Whether ``y op= other`` gives ``y op other``'s dtype: under autocast a float16 convolution output times
    a float32 scale is float32 out of place, and must stay so."""
    return torch.result_type(y, other) == y.dtype and not y.requires_grad


def _multiply(y: Tensor, other: Tensor) -> Tensor:
    return y.mul_(other) if _in_place_keeps_dtype(y, other) else y * other


def _add(y: Tensor, other: Tensor) -> Tensor:
    return y.add_(other) if _in_place_keeps_dtype(y, other) else y + other


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

    def is_matrix_product(self, weight_shape: tuple[int, ...]) -> bool:
        """A linear layer, or a 1x1 convolution without stride, padding, dilation or groups: one matrix
        product over the pixels."""
        if self.linear:
            return True
        ones = all(v == 1 for v in (*weight_shape[2:], *_pair(self.stride), *_pair(self.dilation)))
        return ones and self.groups == 1 and all(v == 0 for v in _pair(self.padding))

    def forward(self, x: Tensor, weight: Tensor) -> Tensor:
        if self.linear:
            return F.linear(x, weight)
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        if self.linear:
            return "linear"
        return f"stride={self.stride}, padding={self.padding}, groups={self.groups}"


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)
