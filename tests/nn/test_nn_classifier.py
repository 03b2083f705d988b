"""ImageClassifier: normalisation lives in the model, and the spec describes it."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mltk.nn import ImageClassifier, build_model

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class TinyNet(nn.Module):
    """[B, 3, H, W] -> logits [B, 4]; embed -> [B, 3] channel means."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 4)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def _classifier(mean=MEAN, std=STD) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(TinyNet(), arch="tiny", args={"num_classes": 4}, mean=mean, std=std)


def test_forward_equals_bare_net_on_standardised_input():
    model = _classifier()
    x = torch.rand(5, 3, 6, 6)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    standardised = (x - mean) / std
    assert torch.equal(model(x), model.net(standardised))
    assert torch.equal(model.embed(x), model.net.embed(standardised))


def test_registry_model_normalises_too():
    torch.manual_seed(0)
    model = build_model(
        "convnet", num_classes=3, in_channels=3, image_size=8, width=4, mean=MEAN, std=STD
    ).eval()
    x = torch.rand(2, 3, 8, 8)
    standardised = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.equal(model(x), model.net(standardised))


def test_mean_and_std_are_buffers_not_weights():
    model = _classifier()
    assert model.mean.shape == (1, 3, 1, 1) and model.std.shape == (1, 3, 1, 1)
    assert set(model.state_dict()) == {"net.head.weight", "net.head.bias"}
    assert "mean" in dict(model.named_buffers()) and "std" in dict(model.named_buffers())
    # So weights saved by one normalisation load into a model with another.
    other = _classifier(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    other.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(other.std, torch.full((1, 3, 1, 1), 0.5))


def test_buffers_follow_dtype_and_device_moves():
    model = _classifier().to(torch.float64)
    assert model.mean.dtype == torch.float64
    assert model(torch.rand(1, 3, 4, 4, dtype=torch.float64)).dtype == torch.float64


def test_spec_is_json_and_keeps_exact_decimal_values():
    model = _classifier()
    spec = model.spec
    assert json.loads(json.dumps(spec)) == spec
    assert spec == {
        "arch": "tiny",
        "args": {"num_classes": 4},
        "mean": list(MEAN),
        "std": list(STD),
    }


def test_spec_is_a_copy():
    model = _classifier()
    spec = model.spec
    spec["args"]["num_classes"] = 99
    spec["mean"][0] = 0.0
    assert model.spec["args"]["num_classes"] == 4
    assert model.spec["mean"][0] == MEAN[0]


def test_a_net_without_embed_is_refused():
    with pytest.raises(TypeError, match="embed"):
        ImageClassifier(nn.Linear(3, 4), arch="linear", args={}, mean=MEAN, std=STD)
