"""Differentiable Siamese augmentation: one draw per group, shared by real and synthetic images, differentiable."""

from __future__ import annotations

import pytest
import torch

from mltk.core.errors import ConfigError
from mltk.engines.condense.dsa import FAMILIES, SiameseAugment, parse_strategy


@pytest.mark.parametrize("family", FAMILIES)
def test_images_of_one_group_get_the_same_transform_and_gradients_flow(family):
    augment = SiameseAugment((family,))
    real = torch.rand(6, 3, 16, 16)
    synthetic = real[:3].clone().requires_grad_(True)  # the first three real images, as "synthetic" ones
    groups = torch.tensor([0, 1, 2, 0, 1, 2])
    draw = augment.draw(3, (16, 16), torch.Generator().manual_seed(3))
    out_real = augment(real, draw, groups)
    out_synthetic = augment(synthetic, draw, groups[:3])
    assert torch.allclose(out_real[:3], out_synthetic, atol=1e-6)  # Siamese: same image, same group, same output
    out_synthetic.square().sum().backward()
    assert synthetic.grad is not None and synthetic.grad.abs().sum() > 0


def test_transforms_change_images_and_groups_draw_independently():
    augment = SiameseAugment(parse_strategy("auto", flip_ok=True))
    images = torch.rand(1, 3, 16, 16).repeat(64, 1, 1, 1)
    draw = augment.draw(64, (16, 16), torch.Generator().manual_seed(0))
    out = augment(images, draw, torch.arange(64))
    assert set(draw.family.tolist()) == set(range(len(FAMILIES)))  # every family chosen by some group
    distinct = {tuple(o.flatten()[:40].tolist()) for o in out}
    assert len(distinct) > 40  # the same image, transformed 64 ways
    one = augment.draw(64, (16, 16), torch.Generator().manual_seed(0), one_family=True)
    assert len(set(one.family.tolist())) == 1


def test_the_same_seed_draws_the_same_parameters():
    augment = SiameseAugment(parse_strategy("auto", flip_ok=False))
    first = augment.draw(5, (8, 8), torch.Generator().manual_seed(11))
    second = augment.draw(5, (8, 8), torch.Generator().manual_seed(11))
    images = torch.rand(5, 1, 8, 8)
    assert torch.equal(augment(images, first, torch.arange(5)), augment(images, second, torch.arange(5)))


def test_strategy_parsing():
    assert "flip" not in parse_strategy("auto", flip_ok=False)  # no mirrored digits
    assert parse_strategy("auto", flip_ok=True) == FAMILIES
    assert parse_strategy("none", flip_ok=True) == ()
    assert parse_strategy("crop_color", flip_ok=True) == ("crop", "color")
    with pytest.raises(ConfigError, match="unknown augmentation 'blur'"):
        parse_strategy("crop_blur", flip_ok=True)


def test_crop_translates_by_whole_pixels_with_zero_fill():
    augment = SiameseAugment(("crop",))
    images = torch.arange(64.0).view(1, 1, 8, 8) + 1
    draw = augment.draw(1, (8, 8), torch.Generator().manual_seed(0))
    draw.shift[:] = torch.tensor([[1, 0]])  # one row down
    out = augment(images, draw, torch.tensor([0]))
    assert torch.equal(out[0, 0, 1:], images[0, 0, :-1]) and out[0, 0, 0].abs().sum() == 0
