"""The encoders around the generator: images into its W+ latents, speech into features, speech into lip edits.

* ``ImageEncoder``: a face crop [B, 3, R, R] in [-1, 1] -> W+ [B, num_ws, w_dim] (the inversion encoder; a
  strided ConvNet down to 4x4, then one linear layer, in the spirit of pSp/e4e at a tiny scale).
* ``AudioEncoder``: one mel window per frame [B, 16, 80] -> a feature [B, audio_dim].
* ``LipEdit``: ``Δ_lip(a_t, w_id)``, the latent edit that opens and shapes the mouth for the sound of frame
  t, for the identity ``w_id``; its last layer starts at zero, so training starts from "no edit".
* ``mask_mouth``: grey out the lower-centre box of an aligned crop, where the mouth is. What the motion
  posterior and the pose path see, so that head motion can be read from a frame without its lips.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mltk.engines.talk.audio import N_MELS, WINDOW_MEL_FRAMES

# Rows and columns (fractions of the aligned crop) of the box that holds the mouth. The alignment template
# (faces.ALIGNMENT_TEMPLATE) puts the eyes at 0.39 and the nose tip at 0.52 of the height, the chin near 0.81.
MOUTH_BOX = (0.58, 0.92, 0.25, 0.75)  # top, bottom, left, right


def mask_mouth(images: torch.Tensor) -> torch.Tensor:
    """[..., 3, S, S] -> the same with the mouth box set to 0 (mid-grey on the [-1, 1] scale)."""
    size_h, size_w = images.shape[-2:]
    top, bottom, left, right = MOUTH_BOX
    keep = torch.ones(size_h, size_w, dtype=images.dtype, device=images.device)
    keep[round(top * size_h):round(bottom * size_h), round(left * size_w):round(right * size_w)] = 0
    return images * keep


def _down_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.LeakyReLU(0.2))


class ImageEncoder(nn.Module):
    """images [B, 3, R, R] in [-1, 1] -> W+ [B, num_ws, w_dim]."""

    def __init__(self, resolution: int, num_ws: int, *, w_dim: int = 64, base_channels: int = 16,
                 max_channels: int = 128):
        super().__init__()
        self.num_ws, self.w_dim = num_ws, w_dim
        layers, width, size = [nn.Conv2d(3, base_channels, 3, padding=1), nn.LeakyReLU(0.2)], base_channels, resolution
        while size > 4:
            wider = min(max_channels, width * 2)
            layers.append(_down_block(width, wider))
            width, size = wider, size // 2
        self.features = nn.Sequential(*layers)
        self.to_latents = nn.Linear(width * 16, num_ws * w_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.to_latents(self.features(images).flatten(1)).view(-1, self.num_ws, self.w_dim)


class AudioEncoder(nn.Module):
    """mel windows [B, 16, 80] -> features [B, audio_dim]: a small 2-D ConvNet over (time, mel band)."""

    def __init__(self, audio_dim: int = 64, *, channels: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=(1, 2), padding=1), nn.LeakyReLU(0.2),  # 16 x 40
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1), nn.LeakyReLU(0.2),  # 8 x 20
            nn.Conv2d(2 * channels, 2 * channels, 3, stride=2, padding=1), nn.LeakyReLU(0.2),  # 4 x 10
            nn.Conv2d(2 * channels, 4 * channels, 3, stride=2, padding=1), nn.LeakyReLU(0.2),  # 2 x 5
        )
        self.out = nn.Linear(4 * channels * 2 * 5, audio_dim)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        if mels.shape[-2:] != (WINDOW_MEL_FRAMES, N_MELS):
            raise ValueError(f"expected mel windows [..., {WINDOW_MEL_FRAMES}, {N_MELS}], got {tuple(mels.shape)}")
        lead = mels.shape[:-2]
        x = self.net(mels.reshape(-1, 1, WINDOW_MEL_FRAMES, N_MELS))
        return self.out(x.flatten(1)).view(*lead, -1)


class LatentEdit(nn.Module):
    """(code [..., C], w_id [..., num_ws, w_dim]) -> an edit of w_id [..., num_ws, w_dim]; zero at initialisation."""

    def __init__(self, code_dim: int, num_ws: int, w_dim: int, *, hidden: int = 256):
        super().__init__()
        self.num_ws, self.w_dim = num_ws, w_dim
        self.net = nn.Sequential(nn.Linear(code_dim + w_dim, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, num_ws * w_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, code: torch.Tensor, w_id: torch.Tensor) -> torch.Tensor:
        identity = w_id.mean(dim=-2)  # [..., w_dim]: a summary of who it is, for identity-specific edits
        out = self.net(torch.cat([code, identity], dim=-1))
        return out.view(*code.shape[:-1], self.num_ws, self.w_dim)


class LipEdit(LatentEdit):
    """``Δ_lip(a_t, w_id)``: audio features [..., audio_dim] -> a W+ edit for the mouth."""


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, S, S] -> float [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] [B, 3, S, S] -> uint8 [B, S, S, 3] (clamped)."""
    return images.detach().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def resize_faces(images: torch.Tensor, size: int) -> torch.Tensor:
    """float [B, 3, H, W] -> [B, 3, size, size], bilinear (antialiased when shrinking, as ``data.mouth_crops``)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=images.shape[-1] > size)
