"""CIFAR ResNets: option-A ResNet-20..110 (akamaster layout) and ResNet-18."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mltk.nn import build_model
from mltk.nn.classifiers.resnet_option_a import ZeroPadShortcut

SHAPE = {"num_classes": 10, "in_channels": 3, "image_size": 32}


def _parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _akamaster_keys(blocks_per_stage: int) -> list[str]:
    """The state_dict keys of akamaster/pytorch_resnet_cifar10's resnet, in order."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"] + [f"bn1.{name}" for name in bn]
    for stage in (1, 2, 3):
        for block in range(blocks_per_stage):
            prefix = f"layer{stage}.{block}"
            for index in (1, 2):
                keys.append(f"{prefix}.conv{index}.weight")
                keys += [f"{prefix}.bn{index}.{name}" for name in bn]
    return keys + ["linear.weight", "linear.bias"]


def test_resnet20_has_the_published_parameter_count():
    assert _parameter_count(build_model("resnet20", **SHAPE)) == 269_722


@pytest.mark.parametrize(
    ("arch", "blocks"),
    [("resnet20", 3), ("resnet32", 5), ("resnet44", 7), ("resnet56", 9), ("resnet110", 18)],
)
def test_depth_and_key_names_match_akamaster(arch, blocks):
    net = build_model(arch, **SHAPE).net
    weighted_layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted_layers) == 6 * blocks + 2 == int(arch.removeprefix("resnet"))
    assert list(net.state_dict()) == _akamaster_keys(blocks)


def test_option_a_shortcut_has_no_parameters_or_state():
    net = build_model("resnet20", **SHAPE).net
    shortcuts = [m for m in net.modules() if isinstance(m, ZeroPadShortcut)]
    assert len(shortcuts) == 2  # first block of stages 2 and 3
    for shortcut in shortcuts:
        assert list(shortcut.parameters()) == [] and list(shortcut.buffers()) == []
    assert not any("shortcut" in key for key in net.state_dict())


def test_option_a_shortcut_subsamples_and_pads_channels_on_both_sides():
    x = torch.rand(2, 16, 8, 8)
    out = ZeroPadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()


def test_weights_are_kaiming_normal():
    torch.manual_seed(0)
    net = build_model("resnet20", **SHAPE).net
    # He init: std sqrt(2 / fan_in); torch's default would give sqrt(1 / (3 fan_in)).
    fan_in = 64 * 3 * 3
    assert net.layer3[1].conv2.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)


def test_resnet18_parameter_count_and_layout():
    net = build_model("resnet18", **SHAPE).net
    assert _parameter_count(net) == 11_173_962
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    assert [len(stage) for stage in (net.layer1, net.layer2, net.layer3, net.layer4)] == [2] * 4
    keys = set(net.state_dict())
    assert {
        "layer2.0.shortcut.0.weight",
        "layer2.0.shortcut.1.running_var",
        "linear.weight",
    } <= keys


def test_resnet18_instance_norm_has_no_batch_statistics():
    net = build_model("resnet18", **SHAPE, norm="instancenorm").net
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert not any("running" in key for key in net.state_dict())
    assert net.bn1.num_groups == 64


def test_resnet18_embeds_64_px_inputs_too():
    model = build_model("resnet18", num_classes=200, in_channels=3, image_size=64).eval()
    with torch.no_grad():
        assert model.embed(torch.rand(1, 3, 64, 64)).shape == (1, 512)
