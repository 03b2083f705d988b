"""The data helpers the MIM recipes added: batched random resized crops and fitting images to a model."""

from __future__ import annotations

import pytest
import torch

from mltk.core.errors import UsageError
from mltk.core.seeding import generator
from mltk.data.images.fit_images import fit_images
from mltk.data.images.resized_crop import random_resized_crop, resized_crop_boxes


def test_whole_image_boxes_are_the_identity_and_flips_mirror():
    images = torch.rand(6, 3, 8, 8)
    same = random_resized_crop(images, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, generator=generator(0),
                               global_batch=6)
    assert torch.allclose(same, images, atol=1e-6)
    flipped = random_resized_crop(images, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True, generator=generator(0),
                                  global_batch=6)
    for row in range(6):
        assert torch.allclose(flipped[row], images[row], atol=1e-6) or \
            torch.allclose(flipped[row], images[row].flip(-1), atol=1e-6)
    assert not torch.allclose(flipped, images)


def test_boxes_respect_the_scale_and_stay_inside_the_image():
    boxes = resized_crop_boxes(2000, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), generator=generator(1))
    cx, cy, w, h = boxes.unbind(1)
    area = w * h
    assert area.min() >= 0.2 - 1e-6 and area.max() <= 1.0 + 1e-6
    assert (cx - w / 2 >= -1e-6).all() and (cx + w / 2 <= 1 + 1e-6).all()
    assert (cy - h / 2 >= -1e-6).all() and (cy + h / 2 <= 1 + 1e-6).all()


def test_rank_slices_crop_exactly_as_the_whole_batch():
    images = torch.rand(8, 1, 8, 8)
    whole = random_resized_crop(images, flip=True, generator=generator(3, 7), global_batch=8)
    halves = [random_resized_crop(images[start:start + 4], flip=True, generator=generator(3, 7), global_batch=8,
                                  start=start) for start in (0, 4)]
    assert torch.equal(torch.cat(halves), whole)


def test_fit_images_converts_channels_and_size():
    grey = torch.full((2, 1, 28, 28), 200, dtype=torch.uint8)
    rgb = fit_images(grey, channels=3, size=32)
    assert rgb.shape == (2, 3, 32, 32) and rgb.dtype == torch.uint8 and bool((rgb == 200).all())
    back = fit_images(rgb, channels=1, size=16)
    assert back.shape == (2, 1, 16, 16) and bool((back == 200).all())
    assert fit_images(grey, channels=1, size=28) is grey
    with pytest.raises(UsageError, match="not square"):
        fit_images(torch.zeros(1, 1, 8, 6, dtype=torch.uint8), channels=1, size=8)
