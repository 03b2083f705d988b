"""Differentiable Siamese augmentation (DSA, Zhao & Bilen 2021), re-implemented.

Every transform is differentiable with respect to the images, so matching
losses can back-propagate through it into synthetic images, codes and
decoders. Parameters are drawn per *group*: in matching a group is a class,
and the real and the synthetic images of that class share one draw (the
"Siamese" part); in evaluation every image is its own group. As in the DM
reference ("S" mode) each group applies one transform family chosen at random
from the strategy, e.g. ``color_crop_cutout_flip_scale_rotate``:

    color   brightness + (u - 0.5) * 1.0, saturation * 2u, contrast * (u + 0.5)
    crop    translate by up to 1/8 of the side, zero fill
    cutout  zero a square of half the side
    flip    left-right with probability 1/2
    scale   x and y scaled by factors in [1/1.2, 1.2]
    rotate  up to 15 degrees either way

The magnitudes are those of the reference (its images are normalised, so are
ours). All draws come from a CPU ``torch.Generator``, so a step's augmentation
is a function of the seed and the step, on any device and any number of ranks.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from mltk.core.errors import ConfigError
from mltk.data.images.augment import shift_crop

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")
FULL_STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclasses.dataclass(frozen=True)
class DSAMagnitudes:
    flip_prob: float = 0.5
    scale: float = 1.2
    rotate_degrees: float = 15.0
    crop_ratio: float = 0.125
    cutout_ratio: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


def parse_strategy(text: str, *, flip_ok: bool, key: str = "match.dsa") -> tuple[str, ...]:
    """``"auto"`` -> every family (no flip where flipping changes the class); ``"none"`` -> ()."""
    if text == "auto":
        return tuple(f for f in FAMILIES if flip_ok or f != "flip")
    if text in ("none", ""):
        return ()
    families = tuple(text.split("_"))
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ConfigError([f"{key}: unknown augmentation {', '.join(map(repr, unknown))} in {text!r} "
                           f"(families: {', '.join(FAMILIES)}, joined by '_'; or auto, none)"])
    return families


@dataclasses.dataclass
class Draw:
    """One draw of parameters for ``groups`` groups; every tensor is [groups] on the CPU."""

    family: torch.Tensor  # int64 index into the strategy
    brightness: torch.Tensor
    saturation: torch.Tensor
    contrast: torch.Tensor
    shift: torch.Tensor  # int64 [groups, 2]: (row, col) translation
    cutout: torch.Tensor  # int64 [groups, 2]: (row, col) centre
    flip: torch.Tensor  # bool
    scale: torch.Tensor  # [groups, 2]: (x, y) factors
    angle: torch.Tensor  # radians


class SiameseAugment:
    """``augment(images, draw, group_of)``: images [N, C, H, W], group_of int64 [N] -> [N, C, H, W]."""

    def __init__(self, strategy: tuple[str, ...], *, magnitudes: DSAMagnitudes = DSAMagnitudes()):
        self.strategy = tuple(strategy)
        self.m = magnitudes

    @property
    def enabled(self) -> bool:
        return bool(self.strategy)

    def draw(self, groups: int, image_size: tuple[int, int], generator: torch.Generator, *,
             one_family: bool = False) -> Draw:
        """Parameters for ``groups`` groups; ``one_family``: the same family for all (the reference's eval mode)."""
        m, g = self.m, generator
        height, width = image_size
        crop_h, crop_w = int(height * m.crop_ratio + 0.5), int(width * m.crop_ratio + 0.5)
        cut_h, cut_w = int(height * m.cutout_ratio + 0.5), int(width * m.cutout_ratio + 0.5)
        families = max(1, len(self.strategy))
        family = torch.randint(0, families, (1 if one_family else groups,), generator=g).expand(groups)
        return Draw(
            family=family.clone(),
            brightness=torch.rand(groups, generator=g),
            saturation=torch.rand(groups, generator=g),
            contrast=torch.rand(groups, generator=g),
            shift=torch.stack([torch.randint(-crop_h, crop_h + 1, (groups,), generator=g),
                               torch.randint(-crop_w, crop_w + 1, (groups,), generator=g)], 1),
            cutout=torch.stack([torch.randint(0, height + (1 - cut_h % 2), (groups,), generator=g),
                                torch.randint(0, width + (1 - cut_w % 2), (groups,), generator=g)], 1),
            flip=torch.rand(groups, generator=g) < m.flip_prob,
            scale=torch.rand(groups, 2, generator=g) * (m.scale - 1.0 / m.scale) + 1.0 / m.scale,
            angle=(torch.rand(groups, generator=g) - 0.5) * 2 * math.radians(m.rotate_degrees),
        )

    def __call__(self, images: torch.Tensor, draw: Draw, group_of: torch.Tensor) -> torch.Tensor:
        if not self.strategy:
            return images
        family_of = draw.family[group_of.cpu()]
        out = images
        for index, name in enumerate(self.strategy):
            rows = (family_of == index).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            groups = group_of.cpu()[rows]
            transform = getattr(self, f"_{name}")
            if rows.numel() == images.shape[0]:
                out = transform(images, draw, groups)
            else:
                rows_dev = rows.to(images.device)
                out = out.index_copy(0, rows_dev, transform(images.index_select(0, rows_dev), draw, groups))
        return out

    # Each transform: x [n, C, H, W], the draw, groups int64 [n] (CPU) -> [n, C, H, W].

    def _color(self, x: torch.Tensor, d: Draw, groups: torch.Tensor) -> torch.Tensor:
        def per_image(values: torch.Tensor) -> torch.Tensor:
            return values[groups].to(x.device, x.dtype).view(-1, 1, 1, 1)

        x = x + (per_image(d.brightness) - 0.5) * self.m.brightness
        channel_mean = x.mean(dim=1, keepdim=True)
        x = (x - channel_mean) * (per_image(d.saturation) * self.m.saturation) + channel_mean
        image_mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - image_mean) * (per_image(d.contrast) + self.m.contrast) + image_mean

    def _crop(self, x: torch.Tensor, d: Draw, groups: torch.Tensor) -> torch.Tensor:
        shifts = d.shift[groups]  # [n, 2]: (rows, cols) to move each image by
        if not x.requires_grad:
            pad = max(int(shifts.abs().max()), 1)
            return shift_crop(x, (pad - shifts).to(x.device), pad)
        # With gradients, index per distinct shift: the backward of one big gather (a scatter-add)
        # is far slower on CPU than that of a few padded slices.
        distinct, which = torch.unique(shifts, dim=0, return_inverse=True)
        out = x
        for index, (rows, cols) in enumerate(distinct.tolist()):
            members = (which == index).nonzero().squeeze(1).to(x.device)
            moved = F.pad(x.index_select(0, members), (cols, -cols, rows, -rows))
            out = moved if len(members) == len(x) else out.index_copy(0, members, moved)
        return out

    def _cutout(self, x: torch.Tensor, d: Draw, groups: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        cut_h, cut_w = int(height * self.m.cutout_ratio + 0.5), int(width * self.m.cutout_ratio + 0.5)
        top = (d.cutout[groups, 0] - cut_h // 2).to(x.device).view(-1, 1, 1)
        left = (d.cutout[groups, 1] - cut_w // 2).to(x.device).view(-1, 1, 1)
        rows = torch.arange(height, device=x.device).view(1, -1, 1)
        cols = torch.arange(width, device=x.device).view(1, 1, -1)
        inside = (rows >= top) & (rows < top + cut_h) & (cols >= left) & (cols < left + cut_w)
        return x * (~inside).unsqueeze(1).to(x.dtype)

    def _flip(self, x: torch.Tensor, d: Draw, groups: torch.Tensor) -> torch.Tensor:
        return torch.where(d.flip[groups].to(x.device).view(-1, 1, 1, 1), x.flip(3), x)

    def _scale(self, x: torch.Tensor, d: Draw, groups: torch.Tensor) -> torch.Tensor:
        theta = torch.zeros(len(groups), 2, 3)
        theta[:, 0, 0] = d.scale[groups, 0]
        theta[:, 1, 1] = d.scale[groups, 1]
        return _warp(x, theta)

    def _rotate(self, x: torch.Tensor, d: Draw, groups: torch.Tensor) -> torch.Tensor:
        angle = d.angle[groups]
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(len(groups), 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sin, cos
        return _warp(x, theta)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of x [n, C, H, W] under the affine maps theta [n, 2, 3], zeros outside."""
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
