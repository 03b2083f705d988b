"""Rotated RoIAlign: a fixed-size feature grid read along an oriented box.

Each box is cut into ``output_size x output_size`` bins along its own axes
(columns along ``w``, rows along ``h``, in the le90 frame of
``boxes.box_to_corners``: bin ``(0, 0)`` touches the first corner). Each bin
averages ``sampling_ratio x sampling_ratio`` bilinear samples taken at
evenly spaced points inside it. This is mmcv's ``RoIAlignRotated`` with
``clockwise=True`` and ``aligned=True``, the setting mmrotate's le90
detectors use, and for ``theta = 0`` it is exactly torchvision's
``roi_align(..., aligned=True)``: the same sample positions (moved by half a
pixel, so that pixel ``i`` covers ``[i, i + 1)`` in box coordinates), the same adaptive sample count
for ``sampling_ratio <= 0`` (``ceil(size / output_size)`` per box), and the
same border rule (samples more than one pixel outside the map read zero,
those within it read the nearest edge).

Samples are gathered explicitly (four neighbours and their weights) rather
than with ``grid_sample``, whose zero padding differs from that border rule.
The result is differentiable with respect to the features. Boxes are read in
chunks so memory stays near ``max_elements`` whatever their number.
"""

from __future__ import annotations

import torch


def rotated_roi_align(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | tuple[int, int],
    *,
    spatial_scale: float = 1.0,
    sampling_ratio: int = 2,
    max_elements: int = 1 << 24,
) -> torch.Tensor:
    """Features ``(B, C, H, W)`` and rois ``(K, 6)`` -> ``(K, C, out_h, out_w)``.

    A roi is ``(batch_index, cx, cy, w, h, theta)`` in image pixels;
    ``spatial_scale`` maps image pixels to this feature map (1/4 for an FPN
    level of stride 4). ``sampling_ratio`` samples per bin side, or
    ``<= 0`` for torchvision's adaptive count. The default 2 is Oriented
    R-CNN's.
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    if features.dim() != 4:
        raise ValueError(f"features must be (B, C, H, W), got {tuple(features.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 6:
        raise ValueError(f"rois must be (K, 6) = (batch_index, cx, cy, w, h, theta), got {tuple(rois.shape)}")
    rois = rois.to(features.dtype)
    if rois.shape[0] and not ((rois[:, 0] >= 0) & (rois[:, 0] < features.shape[0])).all():
        raise ValueError(f"roi batch indices must lie in [0, {features.shape[0]}), the features' batch")
    output = features.new_zeros(rois.shape[0], features.shape[1], out_h, out_w)
    if rois.shape[0] == 0:
        return output

    centers = rois[:, 1:3] * spatial_scale - 0.5
    sizes = rois[:, 3:5] * spatial_scale
    if sampling_ratio > 0:
        grids = torch.full((rois.shape[0], 2), sampling_ratio, dtype=torch.long, device=rois.device)
    else:
        grids = torch.stack([torch.ceil(sizes[:, 1] / out_h), torch.ceil(sizes[:, 0] / out_w)], 1).long()

    # Boxes with one sample grid are read together; the adaptive count varies from box to box.
    for grid in grids.unique(dim=0):
        members = (grids == grid).all(1).nonzero().squeeze(1)
        grid_h, grid_w = int(grid[0]), int(grid[1])
        per_box = features.shape[1] * out_h * out_w * max(grid_h * grid_w, 1) * 4
        step = max(1, max_elements // per_box)
        for start in range(0, members.numel(), step):
            chunk = members[start:start + step]
            output[chunk] = _align_chunk(features, rois[chunk, 0].long(), centers[chunk], sizes[chunk],
                                         rois[chunk, 5], (out_h, out_w), (grid_h, grid_w))
    return output


def _align_chunk(features, batch_index, centers, sizes, theta, output_size, grid) -> torch.Tensor:
    """Boxes sharing one sample grid -> ``(K, C, out_h, out_w)``."""
    out_h, out_w = output_size
    grid_h, grid_w = grid
    if grid_h == 0 or grid_w == 0:  # an adaptive grid of a zero-sized box samples nothing, as torchvision
        return features.new_zeros(centers.shape[0], features.shape[1], out_h, out_w)
    count = grid_h * grid_w
    dtype, device = features.dtype, features.device
    bin_w, bin_h = sizes[:, 0] / out_w, sizes[:, 1] / out_h
    # Positions along the box's own axes, from its centre: (K, out, grid).
    cols = torch.arange(out_w, device=device, dtype=dtype)[None, :, None]
    rows = torch.arange(out_h, device=device, dtype=dtype)[None, :, None]
    col_samples = (torch.arange(grid_w, device=device, dtype=dtype) + 0.5)[None, None, :]
    row_samples = (torch.arange(grid_h, device=device, dtype=dtype) + 0.5)[None, None, :]
    along_w = -sizes[:, 0, None, None] / 2 + cols * bin_w[:, None, None] + col_samples * (bin_w / grid_w)[:, None, None]
    along_h = -sizes[:, 1, None, None] / 2 + rows * bin_h[:, None, None] + row_samples * (bin_h / grid_h)[:, None, None]
    # (K, out_h, grid_h, out_w, grid_w) sample positions on the feature map.
    u = along_w[:, None, None, :, :]
    v = along_h[:, :, :, None, None]
    cos, sin = torch.cos(theta)[:, None, None, None, None], torch.sin(theta)[:, None, None, None, None]
    x = centers[:, 0, None, None, None, None] + u * cos - v * sin
    y = centers[:, 1, None, None, None, None] + u * sin + v * cos
    values = _bilinear(features, batch_index, x, y)  # (K, out_h, grid_h, out_w, grid_w, C)
    pooled = values.sum((2, 4)) / count
    return pooled.permute(0, 3, 1, 2)


def _bilinear(features: torch.Tensor, batch_index: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sample ``features`` at ``(x, y)`` of shape ``(K, ...)`` with torchvision's border rule -> ``(K, ..., C)``."""
    batch, channels, height, width = features.shape
    outside = (y < -1.0) | (y > height) | (x < -1.0) | (x > width)
    y = y.clamp_min(0)
    x = x.clamp_min(0)
    y_low = y.floor().long()
    x_low = x.floor().long()
    at_bottom = y_low >= height - 1
    at_right = x_low >= width - 1
    y_low = torch.where(at_bottom, height - 1, y_low)
    x_low = torch.where(at_right, width - 1, x_low)
    y_high = torch.where(at_bottom, height - 1, y_low + 1)
    x_high = torch.where(at_right, width - 1, x_low + 1)
    y = torch.where(at_bottom, y_low.to(y.dtype), y)
    x = torch.where(at_right, x_low.to(x.dtype), x)
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx

    flat = features.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    base = (batch_index * height * width).view(-1, *([1] * (x.dim() - 1)))

    def read(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return flat.index_select(0, (base + rows * width + cols).reshape(-1)).view(*x.shape, channels)

    value = ((hy * hx)[..., None] * read(y_low, x_low) + (hy * lx)[..., None] * read(y_low, x_high)
             + (ly * hx)[..., None] * read(y_high, x_low) + (ly * lx)[..., None] * read(y_high, x_high))
    return torch.where(outside[..., None], torch.zeros_like(value), value)
