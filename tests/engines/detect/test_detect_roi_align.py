"""Rotated RoIAlign: equal to torchvision's roi_align for upright boxes, turned with the box, differentiable."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import roi_align

from mltk.engines.detect.roi_align import rotated_roi_align


def upright_rois(count: int, generator: torch.Generator, *, dtype=torch.float64):
    """The same boxes as torchvision rois ``(batch, x1, y1, x2, y2)`` and ours ``(batch, cx, cy, w, h, 0)``.

    Some reach past the feature map's border, some are smaller than a bin.
    """
    x1 = torch.rand(count, generator=generator, dtype=dtype) * 70 - 10
    y1 = torch.rand(count, generator=generator, dtype=dtype) * 60 - 10
    w = torch.rand(count, generator=generator, dtype=dtype) * 40 + 0.2
    h = torch.rand(count, generator=generator, dtype=dtype) * 30 + 0.2
    batch = torch.randint(0, 2, (count,), generator=generator).to(dtype)
    corners = torch.stack([batch, x1, y1, x1 + w, y1 + h], dim=1)
    centered = torch.stack([batch, x1 + w / 2, y1 + h / 2, w, h, torch.zeros_like(w)], dim=1)
    return corners, centered


@pytest.mark.parametrize("sampling_ratio", [2, 1, 3, 0])
def test_upright_boxes_equal_torchvision_roi_align(sampling_ratio):
    generator = torch.Generator().manual_seed(sampling_ratio)
    features = torch.randn(2, 5, 24, 30, generator=generator, dtype=torch.float64)
    corners, centered = upright_rois(300, generator)
    expected = roi_align(features, corners, (7, 7), spatial_scale=0.5, sampling_ratio=sampling_ratio, aligned=True)
    ours = rotated_roi_align(features, centered, 7, spatial_scale=0.5, sampling_ratio=sampling_ratio)
    assert (ours - expected).abs().max() < 1e-10


def test_upright_boxes_equal_torchvision_roi_align_in_float32():
    generator = torch.Generator().manual_seed(10)
    features = torch.randn(2, 8, 24, 30, generator=generator)
    corners, centered = upright_rois(200, generator)
    expected = roi_align(features, corners.float(), (7, 5), spatial_scale=0.25, sampling_ratio=2, aligned=True)
    ours = rotated_roi_align(features, centered.float(), (7, 5), spatial_scale=0.25, sampling_ratio=2)
    assert ours.shape == (200, 8, 7, 5)
    # Only the float32 rounding of (x1, x2) against (cx, w) separates the two.
    assert (ours - expected).abs().max() < 1e-4


def test_a_quarter_turn_reads_the_turned_feature_map():
    """A box turned by pi/2 reads what an upright box reads on the map turned the other way.

    ``torch.rot90(f, 1, (2, 3))[i, j] = f[j, W - 1 - i]``: pixel (x, y) of the
    original is pixel (y, W - 1 - x) of the turned map, so the box centred on
    (cx, cy) with its w side pointing down is the upright box centred on
    (cy, W - cx) there (pixel centres sit at +0.5).
    """
    generator = torch.Generator().manual_seed(11)
    features = torch.randn(1, 3, 20, 26, generator=generator, dtype=torch.float64)
    width = features.shape[-1]
    turned = torch.rot90(features, 1, (2, 3))
    cx, cy, w, h = 11.3, 8.6, 9.0, 4.5
    ours = rotated_roi_align(features, torch.tensor([[0, cx, cy, w, h, math.pi / 2]], dtype=torch.float64), 6)
    upright = torch.tensor([[0, cy, width - cx, w, h, 0.0]], dtype=torch.float64)
    expected = rotated_roi_align(turned, upright, 6)
    assert (ours - expected).abs().max() < 1e-10
    # ... and that is not what the same box reads upright, so the angle is used at all.
    assert (ours - rotated_roi_align(features, upright.new_tensor([[0, cx, cy, w, h, 0]]), 6)).abs().max() > 0.1


def test_constant_features_give_the_constant_inside_the_map_whatever_the_angle():
    features = torch.full((1, 2, 40, 40), 3.0, dtype=torch.float64)
    angles = torch.linspace(-math.pi / 2, math.pi / 2, 13, dtype=torch.float64)
    rois = torch.stack([torch.zeros(13), torch.full((13,), 20.0), torch.full((13,), 20.0), torch.full((13,), 12.0),
                        torch.full((13,), 5.0), angles.float()], dim=1).double()
    torch.testing.assert_close(rotated_roi_align(features, rois, 7), torch.full((13, 2, 7, 7), 3.0, dtype=torch.float64))


def test_gradient_with_respect_to_features():
    generator = torch.Generator().manual_seed(12)
    features = torch.randn(1, 2, 9, 11, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 5.0, 4.0, 6.0, 3.0, 0.4], [0, 3.0, 6.5, 4.0, 4.0, -1.2]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: rotated_roi_align(f, rois, 3, sampling_ratio=2), (features,))


def test_chunking_changes_nothing_and_no_rois_give_an_empty_result():
    generator = torch.Generator().manual_seed(13)
    features = torch.randn(2, 4, 16, 16, generator=generator)
    _, rois = upright_rois(50, generator, dtype=torch.float32)
    rois[:, 5] = torch.rand(50, generator=generator) * 3 - 1.5
    whole = rotated_roi_align(features, rois, 7, sampling_ratio=0)
    chunked = rotated_roi_align(features, rois, 7, sampling_ratio=0, max_elements=4 * 49 * 16)
    torch.testing.assert_close(whole, chunked)
    assert rotated_roi_align(features, rois[:0], 7).shape == (0, 4, 7, 7)
    with pytest.raises(ValueError, match="batch indices"):
        rotated_roi_align(features, rois + torch.tensor([2.0, 0, 0, 0, 0, 0]), 7)
