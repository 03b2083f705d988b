"""The deployed network (packed codes, folded BatchNorm, sign activations) computes what QAT trained."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load as load_bytes

from mltk.core.tensor_files import safetensors_bytes
from mltk.engines.quantize.calibrate import calibrate_layers
from mltk.engines.quantize.network import (
    TrainingOptions,
    deployed_tensors,
    fill_deployed,
    load_deployed_tensors,
    plan_quantization,
    quantized_layers,
    to_deployed_form,
    to_training_form,
)
from mltk.nn import build_from_spec, build_model


def _mobilenet(width: float, classes: int = 10):
    torch.manual_seed(0)
    return build_model("mobilenet_v2", num_classes=classes, in_channels=3, image_size=32, width_mult=width,
                       stem_stride=1)


def _quantized(model, *, transform: str, act: str = "rsign", activation: str = "rprelu"):
    plan = plan_quantization(model, image_shape=(3, 32, 32), bits=1, act_bits=1, act_kind=act,
                             binary_activation=activation)
    to_training_form(model, plan, TrainingOptions(transform=transform, ste="approx"))
    return plan


def _deploy(model, plan):
    deployed = build_from_spec(model.spec)
    to_deployed_form(deployed, plan)
    fill_deployed(deployed, model, plan)
    # through the bytes an artifact stores, and back
    stored = load_bytes(safetensors_bytes(deployed_tensors(deployed, plan)))
    loaded = build_from_spec(model.spec)
    to_deployed_form(loaded, plan)
    load_deployed_tensors(loaded, plan, stored, "test")
    return loaded.eval()


def _binarize_everything(model, plan, *, images: int = 64) -> list:
    """Every quantizer of ``plan`` on, calibrated on random images, each learned threshold moved as RSign's
    would be after training, and the BatchNorms given non-trivial running statistics; the quantized layers."""
    layers = quantized_layers(model, plan)
    for layer in layers:
        layer.act_on.fill_(True)
    for spec in plan["activations"]:
        model.get_submodule(spec["name"]).on.fill_(True)
    calibration = (torch.rand(images, 3, 32, 32) * 255).to(torch.uint8)
    calibrate_layers(model, layers, calibration, batch_size=32, device=torch.device("cpu"))
    for layer in layers:
        layer.weight_on.fill_(True)
        if layer.act_quantizer is not None:
            layer.act_quantizer.threshold.data.uniform_(-0.1, 0.1)
    model.train()
    with torch.no_grad():
        model(torch.rand(32, 3, 32, 32))
    model.eval()
    return layers


@pytest.mark.parametrize("transform", ["identity", "pca"])
def test_deployed_mobilenet_reproduces_the_quantized_training_network(transform):
    model = _mobilenet(0.25)
    plan = _quantized(model, transform=transform)
    assert all(layer["folded_bn"] for layer in plan["layers"])  # every binary conv of MobileNetV2 has its BN
    layers = _binarize_everything(model, plan)
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        got = _deploy(model, plan)(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4), (got - expected).abs().max()
    # the depthwise convs keep their per-channel spatial transform, the pointwise ones a channel transform
    modes = {layer.weight_quantizer.layout.mode for layer in layers}
    assert modes == {"spatial", "channel"}


def test_one_bit_mobilenet_v2_is_at_most_a_twelfth_of_the_float_artifact():
    model = _mobilenet(1.0)
    float_bytes = len(safetensors_bytes(model.state_dict()))
    plan = _quantized(model, transform="identity")
    deployed = build_from_spec(model.spec)
    to_deployed_form(deployed, plan)
    fill_deployed(deployed, model.eval(), plan)
    binary_bytes = len(safetensors_bytes(deployed_tensors(deployed, plan)))
    assert float_bytes / binary_bytes >= 12, (float_bytes, binary_bytes)


def test_float16_vectors_halve_the_float_overhead_and_keep_the_outputs():
    torch.manual_seed(0)
    model = _mobilenet(0.25)
    plan = _quantized(model, transform="identity")
    for layer in quantized_layers(model, plan):
        layer.act_on.fill_(True)
        layer.weight_on.fill_(True)
        layer.act_quantizer.threshold.data.uniform_(-0.1, 0.1)
    for spec in plan["activations"]:
        model.get_submodule(spec["name"]).on.fill_(True)
    model.train()
    with torch.no_grad():
        model(torch.rand(16, 3, 32, 32))
    model.eval()
    deployed = build_from_spec(model.spec)
    to_deployed_form(deployed, plan)
    fill_deployed(deployed, model, plan)
    deployed.get_submodule(plan["layers"][0]["name"]).out_bias[0] = 1e5  # beyond float16: must stay float32
    full = deployed_tensors(deployed, plan)
    half = deployed_tensors(deployed, plan, vector_dtype="float16")
    assert half.keys() == full.keys()
    vectors = [k for k, v in full.items() if v.is_floating_point() and v.dim() <= 1]
    out_bias = plan["layers"][0]["name"] + ".out_bias"
    for key, value in half.items():
        if key == out_bias:
            assert value.dtype == torch.float32
        elif key in vectors:
            assert value.dtype == torch.float16
        else:  # packed codes and weight matrices (stem, classifier) are untouched
            assert value.dtype == full[key].dtype and torch.equal(value, full[key])
    saved = sum(full[k].numel() * 2 for k in vectors if k != out_bias)
    assert len(safetensors_bytes(full)) - len(safetensors_bytes(half)) == pytest.approx(saved, rel=0.01)  # header and alignment bytes aside

    x = torch.rand(8, 3, 32, 32)
    rounded = {k: v.half().float() if k in vectors and k != out_bias else v for k, v in full.items()}
    outputs = []
    for tensors in (full, half, rounded):  # the float32 network, the stored float16 one, a rounded reference
        loaded = build_from_spec(model.spec)
        to_deployed_form(loaded, plan)
        load_deployed_tensors(loaded, plan, load_bytes(safetensors_bytes(tensors)), "test")
        assert all(v.dtype == torch.float32 for v in loaded.state_dict().values() if v.is_floating_point())
        with torch.no_grad():
            outputs.append(loaded.eval()(x))
    # loading float16 vectors is exactly rounding the float32 ones, nothing else
    assert torch.equal(outputs[1], outputs[2])
    # (what the rounding does to accuracy is measured on real data: test_quantize_cli checks that the deployed
    # artifact, float16 vectors by default, scores what the float32 training network scores on digits)
