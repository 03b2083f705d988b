"""Conv and linear layers whose weights pass through a sub-network mask learned from scores.

Each masked layer holds its weights ``W`` and learnable ``scores`` ``S`` of the
same shape. The top-``capacity`` fraction of ``|S|`` (per layer, exactly
``round(capacity * numel)`` entries) is the *major* sub-network, mask 1; the
rest is the *minor* sub-network, mask ``U(0, 1)`` (SoftNet) or 0 (HardNet)::

    mask  = 1 on top-c |S|, else soft noise in [0, 1) or 0
    y     = conv(x, W * mask)
    dL/dS = dL/dmask                      # straight-through: the top-c selection passes gradients unchanged

While the masks are learned (the base session) the soft noise is drawn anew on
each forward from ``noise_generator`` (seeded per step by the trainer, the same
on every rank). ``fix_mask`` then freezes the mask: the major set no longer
moves, the soft values are drawn once, from a generator the caller seeds, and
kept in the ``mask`` buffer; the scores stop learning. From then on
``minor_only`` makes the major weights constants of the forward pass, so an
optimizer can only move the minor weights (their gradient is scaled by their
soft mask value).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Minor = Literal["soft", "zero"]


def major_count(numel: int, capacity: float) -> int:
    """How many entries the major sub-network keeps: the top ``capacity`` fraction, at least one."""
    return max(1, min(numel, round(capacity * numel)))


def major_indicator(scores: torch.Tensor, capacity: float) -> torch.Tensor:
    """1.0 on the ``major_count`` entries of largest ``|scores|``, 0.0 elsewhere (same shape as ``scores``)."""
    flat = scores.detach().abs().flatten()
    top = torch.topk(flat, major_count(flat.numel(), capacity), sorted=False).indices
    indicator = torch.zeros_like(flat)
    indicator[top] = 1.0
    return indicator.view_as(scores)


class _StraightThroughMask(torch.autograd.Function):
    """The mask from the scores in the forward pass; the gradient of the mask, unchanged, to the scores."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, capacity: float, minor_values: torch.Tensor | None):
        major = major_indicator(scores, capacity)
        if minor_values is None:
            return major
        return torch.where(major.bool(), major, minor_values)

    @staticmethod
    def backward(ctx, grad_mask: torch.Tensor):
        return grad_mask, None, None


class MaskedLayer(nn.Module):
    """What masked conv and linear layers share; subclasses give ``_apply_weight``."""

    weight: nn.Parameter

    def _init_mask(self, capacity: float, minor: Minor) -> None:
        if not 0 < capacity <= 1:
            raise ValueError(f"capacity must lie in (0, 1], got {capacity}")
        self.capacity = float(capacity)
        self.minor = minor
        self.scores = nn.Parameter(torch.empty_like(self.weight))
        nn.init.kaiming_uniform_(self.scores, a=5 ** 0.5)
        # Fixed after the base session: the mask used from then on, and whether it is fixed (a buffer so that
        # checkpoints and artifacts carry it).
        self.register_buffer("mask", torch.ones_like(self.weight))
        self.register_buffer("mask_fixed", torch.tensor(False))
        self.noise_generator: torch.Generator | None = None
        self.minor_only = False

    def current_mask(self) -> torch.Tensor:
        """The mask of this forward pass: the fixed one, or one from the scores (fresh soft noise each call)."""
        if bool(self.mask_fixed):
            return self.mask
        noise = None
        if self.minor == "soft":
            noise = torch.rand(self.weight.shape, generator=self.noise_generator, device=self.weight.device,
                               dtype=self.weight.dtype)
        return _StraightThroughMask.apply(self.scores, self.capacity, noise)

    def major(self) -> torch.Tensor:
        """Bool, True on the major entries (from the fixed mask once there is one, else from the scores)."""
        if bool(self.mask_fixed):
            return self.mask == 1
        return major_indicator(self.scores, self.capacity).bool()

    @torch.no_grad()
    def fix_mask(self, generator: torch.Generator | None) -> None:
        """Freeze the mask: major from the scores, minor soft values drawn once from ``generator`` (or 0)."""
        major = major_indicator(self.scores, self.capacity)
        if self.minor == "soft":
            noise = torch.rand(self.weight.shape, generator=generator, dtype=self.weight.dtype)
            mask = torch.where(major.bool(), major, noise.to(major.device))
        else:
            mask = major
        self.mask.copy_(mask)
        self.mask_fixed.fill_(True)
        self.scores.requires_grad_(False)

    def masked_weight(self) -> torch.Tensor:
        weight = self.weight
        if self.minor_only:
            weight = torch.where(self.major(), weight.detach(), weight)
        return weight * self.current_mask()


class MaskedConv2d(nn.Conv2d, MaskedLayer):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, capacity: float,
                 minor: Minor = "soft", stride: int = 1, padding: int = 0, bias: bool = False):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self._init_mask(capacity, minor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class MaskedLinear(nn.Linear, MaskedLayer):
    def __init__(self, in_features: int, out_features: int, *, capacity: float, minor: Minor = "soft",
                 bias: bool = True):
        nn.Linear.__init__(self, in_features, out_features, bias=bias)
        self._init_mask(capacity, minor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


def masked_layers(model: nn.Module) -> dict[str, MaskedLayer]:
    return {name: module for name, module in model.named_modules() if isinstance(module, MaskedLayer)}


def set_noise_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    """Every masked layer draws its soft noise from ``generator`` (one stream, in layer order)."""
    for layer in masked_layers(model).values():
        layer.noise_generator = generator
