"""ConvNet: the dataset-condensation reference network, layer for layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mltk.core.errors import ConfigError
from mltk.nn import build_model


def _convnet(**options):
    torch.manual_seed(0)
    shape = {"num_classes": 10, "in_channels": 3, "image_size": 32}
    shape.update({key: options.pop(key) for key in list(options) if key in shape})
    return build_model("convnet", **shape, **options)


def test_parameter_count_matches_the_reference_convnet():
    width, classes = 128, 10
    first_conv = 3 * width * 3 * 3 + width
    later_conv = width * width * 3 * 3 + width
    group_norm_affine = 2 * width
    linear = (width * 4 * 4) * classes + classes  # 32 px halved three times -> 4x4
    expected = first_conv + 2 * later_conv + 3 * group_norm_affine + linear
    assert expected == 320_010
    model = _convnet()
    assert sum(p.numel() for p in model.parameters()) == expected


def test_layer_names_follow_the_reference_layout():
    model = _convnet(width=8, depth=3)
    kinds = [type(layer) for layer in model.net.features]
    block = [nn.Conv2d, nn.GroupNorm, nn.ReLU, nn.AvgPool2d]
    assert kinds == block * 3
    keys = set(model.net.state_dict())
    assert {
        "features.0.weight",
        "features.1.weight",
        "features.8.weight",
        "features.9.bias",
    } <= keys
    assert {"classifier.weight", "classifier.bias"} <= keys
    norm = model.net.features[1]
    assert norm.num_groups == 8 and norm.num_channels == 8 and norm.affine


@pytest.mark.parametrize(
    ("norm", "norm_type", "groups"),
    [("batchnorm", nn.BatchNorm2d, None), ("layernorm", nn.GroupNorm, 1), ("none", None, None)],
)
def test_norm_choices(norm, norm_type, groups):
    model = _convnet(width=8, norm=norm, pooling="maxpool")
    layers = list(model.net.features)
    if norm_type is None:
        assert [type(layer) for layer in layers[:3]] == [nn.Conv2d, nn.ReLU, nn.MaxPool2d]
        return
    assert isinstance(layers[1], norm_type)
    if groups is not None:
        assert layers[1].num_groups == groups


def test_instance_norm_normalises_each_sample_on_its_own():
    model = _convnet(width=8).train()  # train mode: a batch norm would mix samples here
    batch = torch.rand(3, 3, 32, 32)
    changed = batch.clone()
    changed[1:] = torch.rand(2, 3, 32, 32) * 5
    with torch.no_grad():
        assert torch.allclose(model(batch)[0], model(changed)[0], atol=1e-6)
        assert not torch.allclose(model(batch)[1], model(changed)[1])


def test_batch_norm_by_contrast_mixes_samples_in_training():
    model = _convnet(width=8, norm="batchnorm").train()
    batch = torch.rand(3, 3, 32, 32)
    changed = batch.clone()
    changed[1:] = torch.rand(2, 3, 32, 32) * 5
    with torch.no_grad():
        assert not torch.allclose(model(batch)[0], model(changed)[0], atol=1e-4)


@pytest.mark.parametrize(
    ("image_size", "depth", "pooling", "side"),
    [(32, 3, "avgpool", 4), (8, 3, "avgpool", 1), (64, 4, "avgpool", 4), (28, 3, "maxpool", 3)],
)
def test_feature_size_follows_image_size_and_depth(image_size, depth, pooling, side):
    model = _convnet(width=4, depth=depth, pooling=pooling, image_size=image_size)
    features = model.embed(torch.rand(2, 3, image_size, image_size))
    assert features.shape == (2, 4 * side * side)
    assert model.net.classifier.in_features == 4 * side * side


def test_no_pooling_keeps_the_full_resolution():
    model = _convnet(width=4, depth=3, pooling="none", image_size=6)
    assert model.embed(torch.rand(1, 3, 6, 6)).shape == (1, 4 * 6 * 6)


def test_image_too_small_for_depth_is_refused():
    with pytest.raises(ConfigError, match="image_size must be at least 16, got 8"):
        _convnet(depth=4, image_size=8)
