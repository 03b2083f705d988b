"""Quantizers of activations and weights, with their straight-through gradients.

Binary (1-bit):

* ``binary_sign(x)``: +1 where x >= 0, else -1 (zero maps to +1, so a
  deployed network only ever sees two values).
* ``ste_sign(x, ste="clipped")``: the sign forward; backward passes the
  gradient where |x| <= 1 (BinaryNet/XNOR-Net's clipped identity).
* ``ste_sign(x, ste="approx")``: ReActNet's ApproxSign backward, the
  derivative of the piecewise quadratic that approximates sign: 2 - 2|x| on
  |x| < 1, else 0.
* ``ActivationBinarizer``: sign(x - threshold), the threshold per channel;
  fixed at 0 (XNOR-Net) or learned (ReActNet's RSign).
* ``RPReLU``: ReActNet's PReLU with learned shifts before and after, per
  channel, used where a ReLU fed a binarized layer.

Uniform (2, 4, 8 bits): symmetric levels in [-(2^(b-1) - 1), 2^(b-1) - 1]
times a learned step (LSQ: learned step size quantization, with its gradient
scale), per output channel for weights and per tensor for activations.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

STES = ("clipped", "approx")


def binary_sign(x: Tensor, threshold: Tensor | None = None) -> Tensor:
    """+1 where x >= threshold (0 when None), -1 elsewhere; x's shape and dtype.

    One comparison and two in-place passes, no full-size tensors of ones
    (building those made the deployed network's sign activations cost more
    than its convolutions). For finite floats ``x >= t`` is exactly
    ``x - t >= 0``, so a threshold needs no subtraction.
    """
    return (x >= (0 if threshold is None else threshold)).to(x.dtype).mul_(2).sub_(1)


class _ClippedSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


class _ApproxSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * (2 - 2 * x.abs()).clamp_min(0)


def ste_sign(x: Tensor, ste: str = "clipped") -> Tensor:
    """binary_sign(x) forward, the chosen straight-through gradient backward."""
    if ste == "clipped":
        return _ClippedSign.apply(x)
    if ste == "approx":
        return _ApproxSign.apply(x)
    raise ValueError(f"unknown straight-through estimator {ste!r}; expected one of {STES}")


def _per_channel(values: Tensor, x: Tensor) -> Tensor:
    """[C] -> broadcastable against x [B, C, ...]."""
    return values.view(1, -1, *([1] * (x.dim() - 2)))


class ActivationBinarizer(nn.Module):
    """x [B, C, ...] -> sign(x - threshold) in {-1, +1}, threshold [C].

    ``learn_threshold=False`` keeps the threshold a zero buffer (XNOR-Net);
    True makes it a parameter (RSign).
    """

    def __init__(self, channels: int, *, learn_threshold: bool, ste: str = "clipped"):
        super().__init__()
        if ste not in STES:
            raise ValueError(f"unknown straight-through estimator {ste!r}; expected one of {STES}")
        self.ste = ste
        threshold = torch.zeros(channels)
        if learn_threshold:
            self.threshold = nn.Parameter(threshold)
        else:
            self.register_buffer("threshold", threshold)

    def forward(self, x: Tensor) -> Tensor:
        return ste_sign(x - _per_channel(self.threshold, x), self.ste)

    def extra_repr(self) -> str:
        return f"channels={self.threshold.numel()}, learned={isinstance(self.threshold, nn.Parameter)}, ste={self.ste}"


class RPReLU(nn.Module):
    """x [B, C, ...] -> PReLU(x - shift_in) + shift_out, each [C] (ReActNet)."""

    def __init__(self, channels: int, *, init_slope: float = 0.25):
        super().__init__()
        self.shift_in = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels,), init_slope))
        self.shift_out = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        shifted = x - _per_channel(self.shift_in, x)
        return torch.where(shifted >= 0, shifted, shifted * _per_channel(self.slope, x)) \
            + _per_channel(self.shift_out, x)


# ---------------------------------------------------------------- uniform (2/4/8 bits)


def level_limit(bits: int) -> int:
    """Largest level of a symmetric ``bits``-bit quantizer: 1, 7, 127 for 2, 4, 8 bits."""
    return (1 << (bits - 1)) - 1


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


def _grad_scale(x: Tensor, scale: float) -> Tensor:
    """x forward; gradient times ``scale`` backward (LSQ's step-size gradient scale)."""
    return (x - x * scale).detach() + x * scale


def uniform_quantize(x: Tensor, step: Tensor, *, bits: int, grad_scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """(dequantized x, integer levels): levels = clamp(round(x / step), -L, L), L = level_limit(bits).

    ``step`` broadcasts against ``x``; its gradient is LSQ's, scaled by ``grad_scale``.
    """
    limit = level_limit(bits)
    step = _grad_scale(step, grad_scale)
    levels = _RoundSTE.apply(torch.clamp(x / step, -limit, limit))
    return levels * step, levels.detach()


class UniformWeightQuantizer(nn.Module):
    """Weights [O, ...] -> per-output-channel symmetric levels times a learned step [O]."""

    def __init__(self, weight: Tensor, *, bits: int, learn_step: bool):
        super().__init__()
        self.bits = bits
        flat = weight.detach().reshape(weight.shape[0], -1)
        limit = level_limit(bits)
        if learn_step:  # LSQ's initialisation
            init = 2 * flat.abs().mean(dim=1) / math.sqrt(limit)
        else:  # post-training: the range covers the largest weight exactly
            init = flat.abs().amax(dim=1) / limit
        init = init.clamp_min(1e-8)
        self.step = nn.Parameter(init) if learn_step else nn.Parameter(init, requires_grad=False)
        self._grad_scale = 1.0 / math.sqrt(flat.shape[1] * limit)

    def forward(self, weight: Tensor) -> Tensor:
        shape = (-1,) + (1,) * (weight.dim() - 1)
        dequantized, _ = uniform_quantize(weight, self.step.view(shape), bits=self.bits,
                                          grad_scale=self._grad_scale)
        return dequantized

    @torch.no_grad()
    def levels_and_scale(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """(integer levels of weight's shape, step [O]): what a deployed layer stores."""
        shape = (-1,) + (1,) * (weight.dim() - 1)
        _, levels = uniform_quantize(weight, self.step.view(shape), bits=self.bits)
        return levels, self.step.detach().clone()


class UniformActivationQuantizer(nn.Module):
    """x -> symmetric ``bits``-bit levels times one learned step (set by calibration first)."""

    def __init__(self, *, bits: int):
        super().__init__()
        self.bits = bits
        self.step = nn.Parameter(torch.ones(()))

    @torch.no_grad()
    def calibrate(self, *, mean_abs: float, max_abs: float, learn_step: bool) -> None:
        """Set the step from the input's mean and largest magnitude (LSQ's init, or the full range)."""
        limit = level_limit(self.bits)
        value = 2 * mean_abs / math.sqrt(limit) if learn_step else max_abs / limit
        self.step.fill_(max(value, 1e-8))

    def forward(self, x: Tensor) -> Tensor:
        scale = 1.0 / math.sqrt(x[0].numel() * level_limit(self.bits))
        dequantized, _ = uniform_quantize(x, self.step, bits=self.bits, grad_scale=scale)
        return dequantized
