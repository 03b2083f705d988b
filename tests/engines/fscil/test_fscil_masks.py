"""The sub-network mask: exactly the top-c fraction of |scores| is major, soft minor values in [0, 1)
(fresh while learned, drawn once when fixed), HardNet's minor zero, straight-through gradient to the scores."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mltk.engines.fscil.masked_layers import MaskedConv2d, MaskedLinear, major_count


def _conv(capacity: float, minor: str = "soft") -> MaskedConv2d:
    torch.manual_seed(0)
    return MaskedConv2d(4, 6, 3, capacity=capacity, minor=minor, padding=1)


@pytest.mark.parametrize("capacity", [0.05, 0.3, 0.7, 0.95, 1.0])
def test_exactly_the_top_c_fraction_of_abs_scores_is_major(capacity):
    layer = _conv(capacity, "zero")
    mask = layer.current_mask()
    numel = layer.weight.numel()
    assert int((mask == 1).sum()) == major_count(numel, capacity) == max(1, round(capacity * numel))
    scores = layer.scores.detach().abs()
    if capacity < 1:
        assert scores[mask == 1].min() >= scores[mask == 0].max()


def test_soft_minor_values_lie_in_zero_one_and_are_fresh_while_learned():
    layer = _conv(0.7)
    first, second = layer.current_mask(), layer.current_mask()
    major = first == 1
    assert torch.equal(major, second == 1)  # the major set is a function of the scores alone
    minor = first[~major]
    assert minor.numel() > 0 and bool((minor >= 0).all()) and bool((minor < 1).all())
    assert not torch.equal(minor, second[~major])  # redrawn on each forward while the mask is learned


def test_fixed_mask_draws_its_soft_values_once_and_stops_the_scores():
    layer = _conv(0.7)
    expected_major = layer.current_mask() == 1
    layer.fix_mask(torch.Generator().manual_seed(5))
    assert bool(layer.mask_fixed) and not layer.scores.requires_grad
    assert torch.equal(layer.mask == 1, expected_major)
    assert torch.equal(layer.current_mask(), layer.current_mask())  # the same on every forward
    again = _conv(0.7)
    again.fix_mask(torch.Generator().manual_seed(5))
    assert torch.equal(again.mask, layer.mask)  # a function of the seed the caller gives
    minor = layer.mask[~expected_major]
    assert bool((minor > 0).any()) and bool((minor < 1).all())


def test_hardnet_minor_mask_is_zero():
    layer = _conv(0.6, "zero")
    mask = layer.current_mask()
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    layer.fix_mask(None)
    assert set(layer.mask.unique().tolist()) == {0.0, 1.0}
    assert int((layer.mask == 1).sum()) == major_count(layer.weight.numel(), 0.6)


def test_straight_through_gradient_reaches_the_scores_unchanged():
    layer = _conv(0.5, "zero")
    x = torch.randn(2, 4, 5, 5)
    layer(x).square().sum().backward()
    # Reference: the same loss with the mask as a leaf; dL/dscores must equal dL/dmask exactly.
    mask = layer.current_mask().detach().requires_grad_(True)
    F.conv2d(x, layer.weight.detach() * mask, padding=1).square().sum().backward()
    assert layer.scores.grad is not None and layer.scores.grad.abs().sum() > 0
    torch.testing.assert_close(layer.scores.grad, mask.grad)


def test_linear_layer_masks_too_and_capacity_outside_range_is_refused():
    torch.manual_seed(1)
    head = MaskedLinear(10, 3, capacity=0.4, minor="zero")
    assert int((head.current_mask() == 1).sum()) == 12
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="capacity"):
            MaskedLinear(10, 3, capacity=bad)


def test_minor_only_makes_the_major_weights_constants():
    layer = _conv(0.7)
    layer.fix_mask(torch.Generator().manual_seed(0))
    layer.minor_only = True
    layer(torch.randn(2, 4, 5, 5)).sum().backward()
    major = layer.mask == 1
    assert bool((layer.weight.grad[major] == 0).all())
    assert bool((layer.weight.grad[~major] != 0).any())
