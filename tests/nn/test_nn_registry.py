"""Registry: names, options and specs a user can get wrong, all reported at once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mltk.core.errors import EXIT_USAGE, ConfigError, UsageError
from mltk.nn import (
    UnknownArchError,
    arch_names,
    build_from_spec,
    build_model,
    describe_archs,
    register_arch,
)
from mltk.nn.classifiers import architectures as registry_module

SHAPE = {"num_classes": 10, "in_channels": 3, "image_size": 32}
EXPECTED_ARCHS = {
    "convnet",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
}


@pytest.fixture
def private_registry(monkeypatch):
    """A copy of the registry, so test archs vanish after the test."""
    monkeypatch.setattr(registry_module, "_ARCHS", dict(registry_module._ARCHS))


def test_builtin_archs_are_registered_and_described():
    assert set(arch_names()) >= EXPECTED_ARCHS
    assert arch_names() == sorted(arch_names())
    described = {entry["name"]: entry for entry in describe_archs()}
    assert list(described) == arch_names()
    assert described["convnet"]["options"] == {
        "width": 128,
        "depth": 3,
        "norm": "instancenorm",
        "pooling": "avgpool",
    }
    assert described["convnet"]["choices"]["norm"] == [
        "instancenorm",
        "batchnorm",
        "layernorm",
        "none",
    ]
    assert described["mobilenet_v2"]["options"] == {
        "width_mult": 1.0,
        "stem_stride": 2,
        "dropout": 0.2,
        "tf_padding": False,
    }
    assert described["resnet20"]["options"] == {}
    assert all(entry["description"] for entry in described.values())


def test_unknown_arch_names_the_nearest_and_lists_all():
    with pytest.raises(UnknownArchError) as caught:
        build_model("resnet_20", **SHAPE)
    error = caught.value
    assert isinstance(error, UsageError) and error.exit_code == EXIT_USAGE
    assert "did you mean 'resnet20'?" in error.message
    assert all(name in error.message for name in arch_names())


def test_every_bad_option_is_reported_at_once_with_the_nearest_name():
    with pytest.raises(ConfigError) as caught:
        build_model("convnet", **SHAPE, widht=64, deph=2, norm="instancenrom", pooling=2)
    problems = caught.value.problems
    assert len(problems) == 4
    assert "unknown option 'widht' (did you mean 'width'?)" in problems[0]
    assert "unknown option 'deph' (did you mean 'depth'?)" in problems[1]
    assert "did you mean 'instancenorm'?" in problems[2]
    assert "option 'pooling' must be str" in problems[3]
    assert caught.value.exit_code == EXIT_USAGE


def test_options_of_an_arch_without_options_are_refused():
    with pytest.raises(ConfigError, match="resnet20 takes none"):
        build_model("resnet20", **SHAPE, norm="batchnorm")


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"width": 1.5}, "option 'width' must be int"),
        ({"width": True}, "option 'width' must be int"),
        ({"width": 0}, "width must be at least 1"),
        ({"depth": 6}, "image_size must be at least 64, got 32"),
    ],
)
def test_bad_option_values_are_config_errors(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_model("convnet", **SHAPE, **options)


def test_bad_shape_and_normalisation_are_reported_together():
    with pytest.raises(ConfigError) as caught:
        build_model(
            "resnet20", num_classes=0, in_channels=3, image_size=32, mean=(0.5, 0.5), std=(1, 0, 1)
        )
    problems = caught.value.problems
    assert len(problems) == 3
    assert "num_classes must be a positive int, got 0" in problems[0]
    assert "mean needs 3 values" in problems[1]
    assert "std must be positive" in problems[2]


def test_mean_and_std_default_to_one_half_per_channel():
    spec = build_model("resnet20", num_classes=10, in_channels=1, image_size=28).spec
    assert spec["mean"] == [0.5] and spec["std"] == [0.5]


def test_an_int_for_a_float_option_gives_the_same_spec():
    as_int = build_model("mobilenet_v2", **SHAPE, width_mult=1).spec
    as_float = build_model("mobilenet_v2", **SHAPE, width_mult=1.0).spec
    assert as_int == as_float
    assert isinstance(as_int["args"]["width_mult"], float)


def test_spec_with_missing_keys_says_which():
    spec = build_model("resnet20", **SHAPE).spec
    del spec["std"], spec["mean"], spec["args"]["image_size"]
    with pytest.raises(ConfigError) as caught:
        build_from_spec(spec)
    assert caught.value.problems == [
        "missing key 'mean'",
        "missing key 'std'",
        "'args' is missing 'image_size'",
    ]


def test_spec_that_is_not_an_object_is_a_config_error():
    with pytest.raises(ConfigError, match="JSON object"):
        build_from_spec(["resnet20"])


def test_spec_with_unknown_arch_or_option_is_refused():
    spec = build_model("convnet", **SHAPE, width=8).spec
    with pytest.raises(UnknownArchError):
        build_from_spec({**spec, "arch": "convnett"})
    with pytest.raises(ConfigError, match="unknown option 'arch'"):
        build_from_spec({**spec, "args": {**spec["args"], "arch": "convnet"}})


def test_register_arch_builds_a_new_architecture(private_registry):
    class LinearProbeNet(nn.Module):
        def __init__(self, features: int, classes: int):
            super().__init__()
            self.fc = nn.Linear(features, classes)

        def embed(self, x):
            return x.flatten(1)

        def forward(self, x):
            return self.fc(self.embed(x))

    @register_arch("flat_linear", description="flatten then linear", choices={"bias": (True,)})
    def flat_linear(num_classes, in_channels, image_size, *, bias=True):
        return LinearProbeNet(in_channels * image_size * image_size, num_classes)

    model = build_model("flat_linear", num_classes=2, in_channels=1, image_size=4)
    assert "flat_linear" in arch_names()
    assert model.spec["args"] == {"num_classes": 2, "in_channels": 1, "image_size": 4, "bias": True}
    assert model(torch.rand(3, 1, 4, 4)).shape == (3, 2)


def test_register_arch_refuses_malformed_builders(private_registry):
    with pytest.raises(TypeError, match="keyword-only"):
        register_arch("positional", description="")(
            lambda num_classes, in_channels, image_size, width=3: None
        )
    with pytest.raises(TypeError, match="first parameters"):
        register_arch("misnamed", description="")(lambda classes, channels, size: None)
    with pytest.raises(TypeError, match="reserved"):
        register_arch("reserved", description="")(
            lambda num_classes, in_channels, image_size, *, mean=0.5: None
        )
    with pytest.raises(ValueError, match="already registered"):
        register_arch("resnet20", description="")(lambda num_classes, in_channels, image_size: None)
