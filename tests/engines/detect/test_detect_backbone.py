"""The feature pyramid: every backbone gives four FPN levels at strides 4-32, and local weights load into it."""

from __future__ import annotations

import pytest
import torch
import torchvision

from mltk.core.errors import ArtifactError, UsageError
from mltk.engines.detect.backbone import STRIDES, FeaturePyramid, load_backbone_weights
from mltk.engines.detect.config import ModelSpec


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_large"])
def test_pyramid_levels_have_the_strides_and_channels(backbone):
    torch.manual_seed(0)
    pyramid = FeaturePyramid(backbone=backbone, fpn_channels=16).eval()
    with torch.no_grad():
        levels = pyramid(torch.rand(1, 3, 64, 96))
    assert [tuple(level.shape) for level in levels] == [(1, 16, 64 // s, 96 // s) for s in STRIDES]


def test_mobilenet_stages_end_at_each_stride_with_torchvisions_channels():
    # The stage outputs the FPN reads, taken straight from torchvision's model: strides 4, 8, 16, 32 and
    # the channels the FPN's lateral convolutions were built for.
    pyramid = FeaturePyramid(backbone="mobilenet_v3_large", fpn_channels=8).eval()
    with torch.no_grad():
        stages = pyramid.body_and_fpn.body(torch.rand(1, 3, 128, 128))
    assert [tuple(stage.shape[1:]) for stage in stages.values()] == [
        (24, 32, 32), (40, 16, 16), (112, 8, 8), (960, 4, 4)]
    lateral = [block[0].in_channels for block in pyramid.body_and_fpn.fpn.inner_blocks]
    assert lateral == [24, 40, 112, 960]


def test_mobilenet_weights_file_loads_into_the_body(tmp_path):
    torch.manual_seed(1)
    classifier = torchvision.models.mobilenet_v3_large(weights=None)
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save(classifier.state_dict(), path)
    pyramid = FeaturePyramid(backbone="mobilenet_v3_large", fpn_channels=8)
    loaded = load_backbone_weights(pyramid, path)
    body = pyramid.body_and_fpn.body.state_dict()
    assert loaded == len(body)
    assert torch.equal(body["16.0.weight"], classifier.features[16][0].weight)
    # A ResNet's file is not this backbone's: an error, not a half-loaded model.
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(ArtifactError, match="not weights of this backbone"):
        load_backbone_weights(pyramid, tmp_path / "resnet18.pth")


def test_unknown_backbone_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown backbone"):
        FeaturePyramid(backbone="vgg16")
    assert ModelSpec(backbone="mobilenet_v3_large").value_problems() == []
    assert "backbone" in ModelSpec(backbone="vgg16").value_problems()[0]
