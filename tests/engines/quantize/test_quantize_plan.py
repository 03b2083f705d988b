"""Which layers a W1/A1 plan keeps in float: the stem, the classifier, and every block with a narrow bottleneck."""

from __future__ import annotations

import pytest

from mltk.engines.quantize.network import narrowest_channels, plan_quantization
from mltk.nn import build_model


def _plan(model, *, min_binary_channels: int, act_bits: int = 1) -> dict:
    return plan_quantization(model, image_shape=(1, 8, 8), bits=1, act_bits=act_bits,
                             act_kind="sign" if act_bits == 1 else "none", binary_activation="identity",
                             min_binary_channels=min_binary_channels)


@pytest.fixture(scope="module")
def mobilenet():
    return build_model("mobilenet_v2", num_classes=10, in_channels=1, image_size=8, width_mult=0.5, stem_stride=1)


def _block(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[2]) if parts[1] == "features" and parts[2].isdigit() else None


def test_blocks_narrower_than_the_threshold_stay_float_whole(mobilenet):
    plan = _plan(mobilenet, min_binary_channels=32)
    kept = {k["name"]: k for k in plan["full_precision"]}
    # width 0.5: bottlenecks of 8 and 16 channels in blocks 1-6; block 7 reads 16 and writes 32
    narrow_blocks = {_block(name) for name in kept} - {0, None}
    assert narrow_blocks == set(range(1, 8))
    assert all(_block(layer["name"]) >= 8 for layer in plan["layers"])
    for name, entry in kept.items():
        if _block(name) in narrow_blocks:
            assert "quant.min_binary_channels=32" in entry["reason"]
            assert entry["parameters"] == sum(p.numel() for p in mobilenet.get_submodule(name).parameters())
    # the depthwise and projecting convs of a narrow block go with it, wide as their own inputs are
    assert "net.features.3.conv.1.0" in kept and mobilenet.get_submodule("net.features.3.conv.1.0").in_channels >= 64


def test_zero_binarizes_everything_but_stem_and_classifier(mobilenet):
    plan = _plan(mobilenet, min_binary_channels=0)
    assert [k["name"] for k in plan["full_precision"]] == ["net.features.0.0", "net.classifier.1"]


def test_the_rule_is_for_binary_inputs_only(mobilenet):
    plan = _plan(mobilenet, min_binary_channels=32, act_bits=32)  # W1/A32: float inputs keep their width
    assert len(plan["full_precision"]) == 2


def test_layers_outside_any_block_are_not_kept_for_their_width():
    convnet = build_model("convnet", num_classes=10, in_channels=1, image_size=8, width=16, depth=3)
    plan = _plan(convnet, min_binary_channels=32)  # every conv is 16 wide, but a plain stack binarizes well
    assert [k["name"] for k in plan["full_precision"]] == ["net.features.0", "net.classifier"]
    assert narrowest_channels(convnet, [layer["name"] for layer in plan["layers"]]) == {}
