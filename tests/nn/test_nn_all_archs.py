"""Properties every registered architecture must have, checked for each one."""

from __future__ import annotations

import json

import pytest
import torch

from mltk.nn import ImageClassifier, arch_names, build_from_spec, build_model

BATCH, CHANNELS, SIZE, CLASSES = 2, 3, 32, 7

# Non-default options, so the spec round trip has to carry them.
NON_DEFAULT_BUILDS = [
    ("convnet", {"width": 16, "depth": 2, "norm": "batchnorm", "pooling": "maxpool"}, 1, 28),
    ("convnet", {"width": 8, "depth": 4, "norm": "layernorm"}, 3, 64),
    ("convnet", {"width": 8, "depth": 2, "norm": "none", "pooling": "none"}, 3, 12),
    ("resnet18", {"norm": "instancenorm"}, 3, 32),
    ("resnet20", {}, 1, 28),
    ("mobilenet_v2", {"width_mult": 0.5, "stem_stride": 1, "dropout": 0.0}, 1, 32),
    ("mobilenet_v3_small", {"width_mult": 0.75, "stem_stride": 1}, 4, 32),
]


def _build(arch: str, seed: int, **kwargs) -> ImageClassifier:
    torch.manual_seed(seed)
    shape = {"num_classes": CLASSES, "in_channels": CHANNELS, "image_size": SIZE}
    return build_model(arch, **{**shape, **kwargs})


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _assert_round_trip(model: ImageClassifier, x: torch.Tensor) -> None:
    """The JSON spec rebuilds the same architecture, and the weights carry the rest."""
    spec = json.loads(json.dumps(model.spec))
    torch.manual_seed(12345)  # different initial weights: only loading can make them agree
    rebuilt = build_from_spec(spec)
    assert rebuilt.spec == model.spec
    assert _shapes(rebuilt) == _shapes(model)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
        assert torch.equal(rebuilt.embed(x), model.embed(x))


@pytest.mark.parametrize("arch", arch_names())
def test_forward_and_embed_shapes(arch):
    model = _build(arch, seed=0).eval()
    x = torch.rand(BATCH, CHANNELS, SIZE, SIZE)
    with torch.no_grad():
        logits = model(x)
        features = model.embed(x)
    assert logits.shape == (BATCH, CLASSES)
    assert features.ndim == 2 and features.shape[0] == BATCH
    assert torch.isfinite(logits).all() and torch.isfinite(features).all()


@pytest.mark.parametrize("arch", arch_names())
def test_embed_is_what_the_classifier_head_reads(arch):
    """``embed`` returns the head's input, so probes on it see what the logits see."""
    model = _build(arch, seed=0).eval()
    x = torch.rand(BATCH, CHANNELS, SIZE, SIZE)
    # The CIFAR ResNets name their head "linear"; ConvNet and torchvision "classifier".
    head = model.net.linear if hasattr(model.net, "linear") else model.net.classifier
    with torch.no_grad():
        assert torch.equal(head(model.embed(x)), model(x))


@pytest.mark.parametrize("arch", arch_names())
def test_spec_round_trip_gives_identical_architecture(arch):
    model = _build(arch, seed=0)
    _assert_round_trip(model, torch.rand(BATCH, CHANNELS, SIZE, SIZE))


@pytest.mark.parametrize(("arch", "options", "in_channels", "image_size"), NON_DEFAULT_BUILDS)
def test_spec_round_trip_keeps_non_default_options(arch, options, in_channels, image_size):
    model = _build(arch, seed=0, in_channels=in_channels, image_size=image_size, **options)
    assert model.spec["args"] == {
        **model.spec["args"],
        **options,
        "in_channels": in_channels,
        "image_size": image_size,
    }
    _assert_round_trip(model, torch.rand(BATCH, in_channels, image_size, image_size))


@pytest.mark.parametrize("arch", arch_names())
def test_same_seed_gives_same_weights(arch):
    first, second = _build(arch, seed=3), _build(arch, seed=3)
    other = _build(arch, seed=4)
    first_state, second_state = first.state_dict(), second.state_dict()
    assert all(torch.equal(first_state[key], second_state[key]) for key in first_state)
    assert any(
        not torch.equal(first_state[key], value) for key, value in other.state_dict().items()
    )


@pytest.mark.parametrize("arch", arch_names())
def test_spec_lists_every_option_and_weights_sit_under_net(arch):
    model = _build(arch, seed=0)
    spec = model.spec
    assert set(spec) == {"arch", "args", "mean", "std"}
    assert spec["arch"] == arch
    assert {"num_classes", "in_channels", "image_size"} <= set(spec["args"])
    assert all(key.startswith("net.") for key in model.state_dict())
