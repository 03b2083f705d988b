"""MobileNets are torchvision's, key for key, with a stem adapted to small inputs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from mltk.core.errors import ConfigError
from mltk.nn import build_model

TORCHVISION_BUILDERS = {
    "mobilenet_v2": torchvision.models.mobilenet_v2,
    "mobilenet_v3_small": torchvision.models.mobilenet_v3_small,
    "mobilenet_v3_large": torchvision.models.mobilenet_v3_large,
}
IDENTITY_NORMALISATION = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def _final_feature_map_shape(model, x: torch.Tensor) -> tuple[int, ...]:
    """Shape of the last feature map, read with a forward hook on ``features``."""
    seen = []
    hook = model.net.features.register_forward_hook(lambda _m, _in, out: seen.append(out.shape))
    with torch.no_grad():
        model(x)
    hook.remove()
    return tuple(seen[0])


@pytest.mark.parametrize("arch", list(TORCHVISION_BUILDERS))
def test_torchvision_state_dict_loads_strictly_and_gives_the_same_logits(arch):
    torch.manual_seed(0)
    reference = TORCHVISION_BUILDERS[arch](weights=None, num_classes=10).eval()
    torch.manual_seed(1)
    model = build_model(
        arch, num_classes=10, in_channels=3, image_size=224, **IDENTITY_NORMALISATION
    ).eval()
    assert list(model.net.state_dict()) == list(reference.state_dict())
    model.net.load_state_dict(reference.state_dict(), strict=True)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_normalisation_is_applied_before_the_torchvision_net():
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2(weights=None, num_classes=10).eval()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    model = build_model(
        "mobilenet_v2", num_classes=10, in_channels=3, image_size=224, mean=mean, std=std
    ).eval()
    model.net.load_state_dict(reference.state_dict(), strict=True)
    x = torch.rand(2, 3, 64, 64)
    standardised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.equal(model(x), reference(standardised))


def test_stem_stride_one_leaves_a_2x2_map_for_32_px():
    x = torch.rand(1, 3, 32, 32)
    cifar = build_model("mobilenet_v2", num_classes=10, in_channels=3, image_size=32, stem_stride=1)
    imagenet = build_model("mobilenet_v2", num_classes=10, in_channels=3, image_size=32)
    assert _final_feature_map_shape(cifar.eval(), x) == (1, 1280, 2, 2)
    assert _final_feature_map_shape(imagenet.eval(), x) == (1, 1280, 1, 1)
    assert cifar.embed(x).shape == (1, 1280)


def test_stem_stride_one_still_loads_imagenet_shaped_weights():
    reference = torchvision.models.mobilenet_v2(weights=None, num_classes=10)
    model = build_model("mobilenet_v2", num_classes=10, in_channels=3, image_size=32, stem_stride=1)
    model.net.load_state_dict(reference.state_dict(), strict=True)
    assert model.net.features[0][0].stride == (1, 1)


@pytest.mark.parametrize("arch", list(TORCHVISION_BUILDERS))
def test_other_channel_counts_replace_only_the_first_conv(arch):
    reference = TORCHVISION_BUILDERS[arch](weights=None, num_classes=10)
    model = build_model(arch, num_classes=10, in_channels=1, image_size=32, stem_stride=1)
    ours = {key: tuple(v.shape) for key, v in model.net.state_dict().items()}
    theirs = {key: tuple(v.shape) for key, v in reference.state_dict().items()}
    stem_key = "features.0.0.weight"
    assert ours[stem_key] == (theirs[stem_key][0], 1, 3, 3)
    assert {k: s for k, s in ours.items() if k != stem_key} == {
        k: s for k, s in theirs.items() if k != stem_key
    }
    assert model.embed(torch.rand(2, 1, 32, 32)).shape[0] == 2


def test_width_multiplier_and_dropout_reach_torchvision():
    model = build_model(
        "mobilenet_v2", num_classes=10, in_channels=3, image_size=32, width_mult=0.5, dropout=0.1
    )
    reference = torchvision.models.mobilenet_v2(weights=None, num_classes=10, width_mult=0.5)
    shapes = {key: tuple(v.shape) for key, v in model.net.state_dict().items()}
    assert shapes == {key: tuple(v.shape) for key, v in reference.state_dict().items()}
    dropout = [m for m in model.net.classifier if isinstance(m, nn.Dropout)]
    assert [m.p for m in dropout] == [0.1]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"stem_stride": 4}, "stem_stride must be 1"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"width_mult": 0}, "width_mult must be positive"),
    ],
)
def test_bad_mobilenet_options_are_config_errors(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_model("mobilenet_v2", num_classes=10, in_channels=3, image_size=32, **options)
