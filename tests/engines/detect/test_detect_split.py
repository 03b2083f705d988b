"""Held-out regions of a single image: the right-hand or the bottom strip, objects on the border made difficult."""

from __future__ import annotations

import pytest

from mltk.engines.detect.data import CUT_DIFFICULT, split_regions
from mltk.engines.detect.synthetic import write_synthetic_dota


@pytest.fixture(scope="module")
def one_image(tmp_path_factory):
    return write_synthetic_dota(tmp_path_factory.mktemp("dota"), images=1, size=128, objects=12, seed=3)


@pytest.mark.parametrize("side", ["right", "bottom"])
def test_strip_of_one_image_is_held_out(one_image, side):
    train, held_out = split_regions(one_image, classes="dota-v1.0", val_fraction=0.25, min_inside=0.7,
                                    val_side=side)
    (train,), (val,) = train, held_out
    if side == "right":
        assert tuple(train.image.shape[1:]) == (128, 96) and tuple(val.image.shape[1:]) == (128, 32)
        axis = 0  # x coordinates of the polygons
    else:
        assert tuple(train.image.shape[1:]) == (96, 128) and tuple(val.image.shape[1:]) == (32, 128)
        axis = 1
    # Labels are in the region's own pixels: the held-out strip's start from its border.
    train_centres = train.labels.polygons[:, axis::2].mean(1)
    val_centres = val.labels.polygons[:, axis::2].mean(1)
    assert (train_centres < 96 + 1e-6).all()
    assert (val_centres > -20).all() and (val_centres < 32 + 1e-6).all()
    # Whole objects of the strip are kept as they are; only objects the border cuts become difficult.
    whole = (val.labels.polygons[:, axis::2] >= 0).all(1)
    cut_difficult = val.labels.difficult == CUT_DIFFICULT
    assert whole.any() and not (whole & cut_difficult).any()


def test_unknown_side_is_refused(one_image):
    with pytest.raises(ValueError, match="val_side"):
        split_regions(one_image, classes="dota-v1.0", val_fraction=0.25, min_inside=0.7, val_side="left")
