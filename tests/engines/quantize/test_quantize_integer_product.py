"""Binary 1x1 convolutions and linear layers of the deployed network run as int8 matrix products, with
exactly the outputs of the float operation on the +-1 values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mltk.engines.quantize import layers as layers_module
from mltk.engines.quantize.layers import DeployedLayer, FloatShortcut, int8_matrix_product_works

from .test_quantize_deploy import _binarize_everything, _deploy
from .test_quantize_shortcuts import _binary_mobilenet

pytestmark = pytest.mark.skipif(not int8_matrix_product_works(),
                                reason="this PyTorch has no working int8 matrix product (torch._int_mm)")


def _filled(layer: nn.Module, *, shortcut: bool = True) -> DeployedLayer:
    torch.manual_seed(0)
    channels = getattr(layer, "in_channels", getattr(layer, "in_features", 0))
    outputs = getattr(layer, "out_channels", getattr(layer, "out_features", 0))
    deployed = DeployedLayer(layer, bits=1, act_kind="rsign", act_bits=1,
                             shortcut=FloatShortcut(channels, outputs) if shortcut else None)
    deployed.codes.copy_(torch.where(torch.randn_like(layer.weight) >= 0, 1.0, -1.0))
    deployed.out_scale.uniform_(0.5, 2)
    deployed.out_bias.normal_()
    deployed.input_quantizer.threshold.uniform_(-0.2, 0.2)
    return deployed.eval()


def _float_path(layer: DeployedLayer, x: torch.Tensor) -> torch.Tensor:
    layer.integer_product = False
    try:
        return layer(x)
    finally:
        layer.integer_product = True


def _counting_int_mm(monkeypatch, *, vnni: bool = True) -> list:
    """Every call of torch._int_mm, recorded; the CPU taken to have VNNI (products of any size run) or not."""
    monkeypatch.setattr(layers_module, "_cpu_has_vnni", lambda: vnni)
    calls = []
    original = torch._int_mm

    def counted(a, b):
        calls.append((tuple(a.shape), tuple(b.shape)))
        return original(a, b)

    monkeypatch.setattr(torch, "_int_mm", counted)
    return calls


@pytest.mark.parametrize("layer,shape", [(nn.Conv2d(8, 48, 1), (2, 8, 5, 7)), (nn.Conv2d(48, 16, 1), (3, 48, 4, 4)),
                                         (nn.Linear(40, 7), (5, 40))], ids=["expand", "project", "linear"])
def test_integer_product_equals_the_float_operation_bit_for_bit(layer, shape, monkeypatch):
    deployed = _filled(layer)
    x = torch.randn(*shape)
    inputs = [x, x.contiguous(memory_format=torch.channels_last)] if x.dim() == 4 else [x]
    calls = _counting_int_mm(monkeypatch)
    with torch.no_grad():
        for inp in inputs:
            assert torch.equal(deployed(inp), _float_path(deployed, inp))
    assert len(calls) == len(inputs)  # the integer product really ran, once per call of the layer


def test_refilled_codes_are_read_again():
    deployed = _filled(nn.Conv2d(16, 24, 1))
    x = torch.randn(2, 16, 3, 3)
    with torch.no_grad():
        before = deployed(x)
        deployed.codes.mul_(-1)  # the loader fills the buffer in place, after the layer was built
        after = deployed(x)
        assert torch.equal(after, _float_path(deployed, x)) and not torch.equal(after, before)


def test_a_layer_built_under_inference_mode_runs():
    """Tensors made under torch.inference_mode have no version counter to tell a refill by."""
    with torch.inference_mode():
        deployed = _filled(nn.Conv2d(16, 24, 1))
        x = torch.randn(2, 16, 3, 3)
        assert torch.equal(deployed(x), _float_path(deployed, x))


def test_without_vnni_small_products_keep_the_float_operation(monkeypatch):
    """Below MIN_ROWS_WITHOUT_VNNI rows (pixels times batch) oneDNN's int8 product is slower than float32
    there."""
    deployed = _filled(nn.Conv2d(16, 24, 1))
    calls = _counting_int_mm(monkeypatch, vnni=False)
    small, large = torch.randn(1, 16, 4, 4), torch.randn(4, 16, 4, 4)  # 16 and 64 rows
    with torch.no_grad():
        assert torch.equal(deployed(small), _float_path(deployed, small)) and not calls
        assert torch.equal(deployed(large), _float_path(deployed, large)) and calls == [((64, 16), (16, 24))]


@pytest.mark.parametrize("layer", [nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                                   nn.Conv2d(8, 16, 1, stride=2), nn.Conv2d(8, 16, 1, padding=1)],
                         ids=["3x3", "depthwise", "strided-1x1", "padded-1x1"])
def test_other_convolutions_keep_the_float_operation(layer):
    assert not _filled(layer, shortcut=False).integer_product


def test_tracing_records_the_float_operation(monkeypatch):
    """Exported graphs (torch.jit.trace, torch.export) stay portable: no private int8 kernel in them."""
    deployed = _filled(nn.Conv2d(8, 48, 1))
    x = torch.randn(2, 8, 4, 4)
    calls = _counting_int_mm(monkeypatch)
    with torch.no_grad():
        traced = torch.jit.trace(deployed, x, check_trace=False)
        assert not calls and "_int_mm" not in str(traced.graph)
        assert torch.equal(traced(x), deployed(x))


def test_deployed_mobilenet_gives_the_same_logits_with_and_without_integer_products(monkeypatch):
    model, plan = _binary_mobilenet("identity", True, width=0.25)
    _binarize_everything(model, plan, images=16)
    deployed = _deploy(model, plan)
    layers = [m for m in deployed.modules() if isinstance(m, DeployedLayer)]
    assert sum(m.integer_product for m in layers) >= len(layers) // 2  # the pointwise half of MobileNetV2
    x = torch.rand(4, 3, 32, 32)
    calls = _counting_int_mm(monkeypatch)
    with torch.no_grad():
        integer = deployed(x)
        assert len(calls) == sum(m.integer_product for m in layers)
        for m in layers:
            m.integer_product = False
        assert torch.equal(integer, deployed(x))
