"""Float shortcuts around binary-input layers: shapes, the reference computation, deployment and the plan."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mltk.engines.quantize.layers import DeployedLayer, FloatShortcut
from mltk.engines.quantize.network import (
    TrainingOptions,
    plan_quantization,
    quantized_layers,
    to_training_form,
)
from mltk.engines.quantize.quantizers import binary_sign
from mltk.nn import build_model

from .test_quantize_deploy import _binarize_everything, _deploy, _mobilenet


def test_expanding_shortcut_repeats_each_input_channel():
    x = torch.randn(2, 8, 5, 5)
    y = FloatShortcut(8, 48)(x, (5, 5))
    assert y.shape == (2, 48, 5, 5)
    for o in range(48):  # output channel o copies input channel o // 6
        assert torch.equal(y[:, o], x[:, o // 6])


def test_projecting_shortcut_averages_contiguous_channel_groups():
    x = torch.randn(2, 48, 4, 4)
    y = FloatShortcut(48, 8)(x, (4, 4))
    assert y.shape == (2, 8, 4, 4)
    for o in range(8):
        assert torch.allclose(y[:, o], x[:, 6 * o:6 * o + 6].mean(1), atol=1e-6)


def test_projecting_shortcut_of_a_non_multiple_is_the_adaptive_channel_mean():
    x = torch.randn(2, 72, 3, 3)
    y = FloatShortcut(72, 16)(x, (3, 3))
    assert y.shape == (2, 16, 3, 3)
    for o in range(16):  # adaptive pooling bins: [floor(o * I / O), ceil((o + 1) * I / O))
        start, end = (o * 72) // 16, -(-((o + 1) * 72) // 16)
        assert torch.allclose(y[:, o], x[:, start:end].mean(1), atol=1e-6)


def test_strided_shortcut_averages_two_by_two_windows_and_keeps_depthwise_channels():
    x = torch.randn(2, 12, 8, 8)
    y = FloatShortcut(12, 12, pool=True)(x, (4, 4))
    assert torch.allclose(y, F.avg_pool2d(x, 2), atol=1e-6)
    assert torch.equal(FloatShortcut(12, 12)(x, (8, 8)), x)  # stride 1, same channels: the identity


def test_linear_shortcut_maps_features():
    x = torch.randn(3, 10)
    assert torch.equal(FloatShortcut(10, 20)(x), x.repeat_interleave(2, dim=1))
    assert torch.allclose(FloatShortcut(10, 5)(x), x.view(3, 5, 2).mean(2))


@pytest.mark.parametrize("conv", [nn.Conv2d(8, 48, 1), nn.Conv2d(48, 48, 3, stride=2, padding=1, groups=48),
                                  nn.Conv2d(48, 16, 1)], ids=["expand", "depthwise-stride-2", "project"])
def test_deployed_layer_with_shortcut_equals_the_reference_computation(conv):
    torch.manual_seed(0)
    shortcut = FloatShortcut(conv.in_channels, conv.out_channels, pool=conv.stride == (2, 2))
    layer = DeployedLayer(conv, bits=1, act_kind="rsign", act_bits=1, shortcut=shortcut)
    layer.codes.copy_(torch.where(torch.randn_like(conv.weight) >= 0, 1.0, -1.0))
    layer.out_scale.uniform_(0.5, 2)
    layer.out_bias.normal_()
    layer.input_quantizer.threshold.uniform_(-0.2, 0.2)
    x = torch.randn(2, conv.in_channels, 8, 8)
    binary = F.conv2d(binary_sign(x, layer.input_quantizer.threshold.view(1, -1, 1, 1)), layer.codes, None,
                      conv.stride, conv.padding, conv.dilation, conv.groups)
    main = binary * layer.out_scale.view(1, -1, 1, 1) + layer.out_bias.view(1, -1, 1, 1)
    shortcut = x
    if conv.stride[0] == 2:
        shortcut = F.avg_pool2d(shortcut, 2)
    if conv.out_channels > conv.in_channels:
        shortcut = shortcut.repeat_interleave(conv.out_channels // conv.in_channels, dim=1)
    elif conv.out_channels < conv.in_channels:
        shortcut = shortcut.view(2, conv.out_channels, -1, *shortcut.shape[-2:]).mean(2)
    assert torch.allclose(layer(x), main + shortcut, atol=1e-5)
    layer.shortcut = None
    assert not torch.allclose(layer(x), main + shortcut, atol=1e-2)  # the shortcut is really part of the output


def _binary_mobilenet(transform: str, float_shortcuts: bool, width: float = 0.5):
    model = _mobilenet(width)
    plan = plan_quantization(model, image_shape=(3, 32, 32), bits=1, act_bits=1, act_kind="rsign",
                             binary_activation="rprelu", float_shortcuts=float_shortcuts)
    to_training_form(model, plan, TrainingOptions(transform=transform, ste="approx"))
    return model, plan


def test_every_binary_layer_of_mobilenet_gets_a_shortcut_with_the_expected_map():
    model, plan = _binary_mobilenet("identity", True)
    residual_blocks = [name for name, module in model.named_modules() if getattr(module, "use_res_connect", False)]
    assert len(residual_blocks) == 10
    kinds = {}
    for spec in plan["layers"]:
        shortcut = spec["shortcut"]
        block = next((b for b in residual_blocks if spec["name"].startswith(b + ".")), None)
        if block is not None and spec["name"] == f"{block}.conv.2":  # the project conv of a residual block:
            assert shortcut is None  # the block's own residual is its float path
            continue
        conv = model.get_submodule(spec["name"]).layer
        channels, _, spatial = shortcut.partition("+")
        assert spatial == ("avgpool" if conv.stride == (2, 2) else "")
        expected = FloatShortcut(conv.in_channels, conv.out_channels).channels()
        assert channels == expected
        if conv.groups > 1:
            assert channels == "identity"  # depthwise
        elif conv.out_channels > conv.in_channels:
            assert channels == "repeat"  # expand
        else:
            assert channels in ("group-mean", "adaptive-mean", "identity")  # project, or the last 1x1
        kinds[channels] = kinds.get(channels, 0) + 1
    assert kinds["repeat"] and kinds["group-mean"] and kinds["identity"]
    assert sum(bool(spec["shortcut"]) and spec["shortcut"].endswith("+avgpool") for spec in plan["layers"]) == 4
    _, plain = _binary_mobilenet("identity", False)
    assert all(spec["shortcut"] is None for spec in plain["layers"])


def test_weight_only_or_multi_bit_plans_have_no_shortcuts():
    model = _mobilenet(0.25)
    for bits, act_bits, act in ((1, 32, "none"), (4, 32, "none"), (2, 4, "uniform")):
        plan = plan_quantization(model, image_shape=(3, 32, 32), bits=bits, act_bits=act_bits, act_kind=act,
                                 binary_activation="identity", float_shortcuts=True)
        assert all(spec["shortcut"] is None for spec in plan["layers"])


def test_shortcut_waits_for_the_binary_inputs_then_changes_the_output():
    torch.manual_seed(0)
    parent = _mobilenet(0.5).eval()
    model, plan = _binary_mobilenet("identity", True)
    model.eval()
    x = torch.rand(4, 3, 32, 32)
    def relative(a, b):  # an untrained MobileNet's logits are tiny: compare relative to their size
        return float((a - b).abs().max() / b.abs().max())

    with torch.no_grad():
        # nothing switched on yet: with its BatchNorms moved into the layers, still exactly the float parent
        assert relative(model(x), parent(x)) < 1e-5
        layers = quantized_layers(model, plan)
        layers[0].act_on.fill_(True)
        on = model(x)
        layers[0].shortcut = None
        off = model(x)
    assert relative(on, off) > 1e-2


def test_deployed_mobilenet_with_shortcuts_reproduces_the_training_network():
    # the transform does not touch the shortcuts (test_quantize_deploy covers pca without them)
    model, plan = _binary_mobilenet("identity", True, width=0.25)
    _binarize_everything(model, plan, images=16)
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        deployed = _deploy(model, plan)
        got = deployed(x)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4), (got - expected).abs().max()
        # and the deployed network really runs its shortcuts: without them it computes something else
        for spec in plan["layers"]:
            deployed.get_submodule(spec["name"]).shortcut = None
        assert not torch.allclose(deployed(x), expected, atol=1e-2)


def test_a_plan_without_shortcut_keys_deploys_as_before():
    """Artifacts written before float shortcuts existed carry no ``shortcut`` key: no shortcut is built."""
    model = build_model("mobilenet_v2", num_classes=10, in_channels=3, image_size=32, width_mult=0.25,
                        stem_stride=1)
    plan = plan_quantization(model, image_shape=(3, 32, 32), bits=1, act_bits=1, act_kind="sign",
                             binary_activation="identity", float_shortcuts=True)
    old = {**plan, "layers": [{k: v for k, v in spec.items() if k != "shortcut"} for spec in plan["layers"]]}
    from mltk.engines.quantize.network import to_deployed_form
    from mltk.nn import build_from_spec

    deployed = build_from_spec(model.spec)
    to_deployed_form(deployed, old)
    assert all(deployed.get_submodule(spec["name"]).shortcut is None for spec in old["layers"])
