"""A small style-based generator: W+ latents -> face images, with modulated and demodulated convolutions.

StyleTalker edits the latents of a pretrained StyleGAN; none is available
offline, so mltk trains this one on the training frames (``styletalker``'s
generator stage) at the preset's resolution. The layout is StyleGAN2's:

    x = learned constant [C, 4, 4]
    for each resolution 4, 8, ..., R:  (bilinear x2 up, except at 4) -> ModulatedConv3x3 -> ModulatedConv3x3 -> LeakyReLU
                                        rgb = up(rgb) + ToRGB(x)   (a modulated 1x1 without demodulation: "skip" output)

Every modulated layer has its own latent (W+): ``num_ws = 3 * levels - 1``
vectors of ``w_dim``. Modulation scales the kernel's input channels by an
affine map of the layer's latent; demodulation rescales each output
channel's kernel to unit norm (Karras et al. 2020, eq. 1-3), applied as
input and output scalings around one shared convolution.

Left out (our simplification, docs/talk.md): the mapping network from z
(the encoder gives W+ directly), noise inputs, FIR up-sampling, the
equalised learning rate (plain init at 1/sqrt(fan_in) instead).
A pretrained generator plugs in by matching ``StyleGenerator``'s
constructor and ``forward(ws) -> [B, 3, R, R]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def generator_levels(resolution: int) -> int:
    """4 -> 1, 8 -> 2, ..., 256 -> 7; the resolution must be a power of two from 8 up."""
    levels = int(math.log2(resolution)) - 1
    if resolution < 8 or 2 ** (levels + 1) != resolution:
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
    return levels


def num_latents(resolution: int) -> int:
    """W+ entries: two convs and one ToRGB per level, less the missing first conv at 4x4."""
    return 3 * generator_levels(resolution) - 1


def level_channels(resolution: int, base: int, maximum: int) -> list[int]:
    """Channels per level, 4x4 first: ``base * 2**k`` counted back from the top level, capped at ``maximum``."""
    levels = generator_levels(resolution)
    return [min(maximum, base * 2 ** (levels - 1 - k)) for k in range(levels)]


class ModulatedConv2d(nn.Module):
    """x [B, I, H, W], w [B, w_dim] -> [B, O, H, W]; kernel scaled per sample by ``affine(w)``, then demodulated."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, *, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size)
                                   / math.sqrt(in_channels * kernel_size ** 2))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.affine = nn.Linear(w_dim, in_channels)
        nn.init.zeros_(self.affine.weight)
        nn.init.ones_(self.affine.bias)  # the style starts as the identity scale
        self.demodulate = demodulate
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # Scaling the input by the style and the output by the demodulation coefficient is the same as
        # convolving with the per-sample kernel (StyleGAN2's "non-fused" form), and one shared-kernel
        # convolution is far faster on a CPU than a grouped one with a kernel per sample.
        style = self.affine(w)  # [B, I]
        out = F.conv2d(x * style[:, :, None, None], self.weight, padding=self.padding)
        if self.demodulate:
            # sum over i, k of (W[o, i, k] s[b, i])^2 = sum_i s[b, i]^2 sum_k W[o, i, k]^2
            energy = style.pow(2) @ self.weight.pow(2).sum(dim=(2, 3)).T  # [B, O]
            out = out * torch.rsqrt(energy + 1e-8)[:, :, None, None]
        return out + self.bias[None, :, None, None]


class StyleGenerator(nn.Module):
    """ws [B, num_ws, w_dim] -> images [B, 3, R, R] in [-1, 1] (tanh-free: clamp at display time)."""

    def __init__(self, resolution: int, *, w_dim: int = 64, base_channels: int = 16, max_channels: int = 128):
        super().__init__()
        self.resolution, self.w_dim = resolution, w_dim
        self.num_ws = num_latents(resolution)
        channels = level_channels(resolution, base_channels, max_channels)
        self.constant = nn.Parameter(torch.randn(channels[0], 4, 4))
        self.convs = nn.ModuleList()
        self.to_rgb = nn.ModuleList()
        previous = channels[0]
        for level, width in enumerate(channels):
            if level > 0:
                self.convs.append(ModulatedConv2d(previous, width, 3, w_dim))
            self.convs.append(ModulatedConv2d(width, width, 3, w_dim))
            self.to_rgb.append(ModulatedConv2d(width, 3, 1, w_dim, demodulate=False))
            previous = width

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"expected ws [B, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        x = self.constant[None].expand(ws.shape[0], -1, -1, -1)
        rgb = None
        index, conv = 0, iter(self.convs)
        for level, to_rgb in enumerate(self.to_rgb):
            if level > 0:
                x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
                x = F.leaky_relu(next(conv)(x, ws[:, index]), 0.2)
                index += 1
            x = F.leaky_relu(next(conv)(x, ws[:, index]), 0.2)
            index += 1
            skip = to_rgb(x, ws[:, index])
            index += 1
            rgb = skip if rgb is None else F.interpolate(rgb, scale_factor=2.0, mode="bilinear",
                                                         align_corners=False) + skip
        return rgb
