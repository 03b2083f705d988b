"""Sizes from a card, a weights file's metadata or the command line never build a model at full size.

A card is checked against the stored tensors' shapes on the ``meta`` device
before anything is allocated; sizes beyond any real model are refused outright.
The loads run in a child under an address-space limit (the ``memory_limited``
fixture), so a regression fails with MemoryError instead of exhausting the machine.
"""

from __future__ import annotations

import pytest
import torch

from mltk.core.artifact import provenance
from mltk.core.errors import ArtifactError, ConfigError
from mltk.core.tensor_files import safetensors_bytes
from mltk.nn import build_model
from mltk.nn.artifacts import load_classifier
from mltk.nn.classifiers.architectures import MAX_PARAMETERS, build_from_spec
from mltk.nn.encoders.mae import build_mae

TASK = {"data": {"name": "digits"}, "class_names": [str(i) for i in range(10)]}


def _small_convnet():
    return build_model("convnet", num_classes=10, in_channels=1, image_size=8, width=4, depth=1)


def _weights_file(path, tensors, spec):
    """A lone mltk weights file whose metadata (its card) gives ``spec`` as the architecture."""
    metadata = provenance(engine="supervised", parent="", relation="", arch=spec, task=TASK, format="pt")
    path.write_bytes(safetensors_bytes(tensors, metadata))
    return path


def test_the_memory_limit_stops_a_large_allocation(memory_limited):
    # The guard the tests below rely on: 2 GiB is refused under a 1 GiB headroom.
    result = memory_limited("import torch; torch.ones(2 << 30, dtype=torch.uint8)")
    assert result.code != 0 and result.out_of_memory, result.stderr


@pytest.mark.parametrize(("key", "value", "message"), [
    ("num_classes", 10**9, "num_classes must be at most 100,000, got 1,000,000,000"),
    ("image_size", 10**6, "image_size must be at most 4,096, got 1,000,000"),
    ("width", 10**9, "option 'width' must be at most 4,096, got 1,000,000,000"),
    ("depth", 10**6, "option 'depth' must be at most 64, got 1,000,000"),
])
def test_a_card_asking_for_a_huge_model_is_refused_before_building(tmp_path, load_limited, key, value,
                                                                    message):
    model = _small_convnet()
    spec = model.spec
    spec["args"][key] = value
    spec["args"]["pooling"] = "none"  # so that depth alone does not already fail the image-size check
    path = _weights_file(tmp_path / "huge.safetensors", model.state_dict(), spec)
    result = load_limited("from mltk.nn.artifacts import load_classifier", f"load_classifier({str(path)!r})")
    assert result.code == 3, result.stderr
    assert message in result.stdout and "the card's architecture spec is invalid" in result.stdout


def test_a_card_larger_than_its_weights_is_refused_from_the_header(tmp_path, load_limited):
    # 838M parameters: within every bound, so only the comparison on the meta device stops it
    # from taking 3.4 GB, far past the child's limit.
    model = _small_convnet()
    spec = model.spec
    spec["args"].update(num_classes=50, width=256, image_size=256, pooling="none")
    assert sum(p.numel() for p in build_from_spec(spec, device="meta").parameters()) < MAX_PARAMETERS
    path = _weights_file(tmp_path / "liar.safetensors", model.state_dict(), spec)
    result = load_limited("from mltk.nn.artifacts import load_classifier", f"load_classifier({str(path)!r})")
    assert result.code == 3, result.stderr
    assert "the weights do not fit the architecture 'convnet'" in result.stdout
    assert "of another shape (first: net.classifier.bias (10,) vs (50,))" in result.stdout


def test_sizes_that_multiply_past_the_parameter_budget_are_refused():
    with pytest.raises(ConfigError, match="parameters, more than the 1,000,000,000 mltk builds"):
        build_model("convnet", num_classes=1000, in_channels=3, image_size=512, width=4096, depth=1,
                    pooling="none")


def test_the_meta_skeleton_has_every_shape_and_no_memory():
    skeleton = build_from_spec(_small_convnet().spec, device="meta")
    real = _small_convnet().state_dict()
    assert {k: v.shape for k, v in skeleton.state_dict().items()} == {k: v.shape for k, v in real.items()}
    assert all(t.is_meta for t in skeleton.state_dict().values())


def test_an_mae_card_with_a_huge_decoder_is_refused():
    spec = {"arch": "mae", "encoder": {"arch": "vit", "args": {"in_channels": 1, "image_size": 8,
                                                                "patch_size": 4}},
            "decoder": {"width": 0, "depth": 10**6, "heads": 0}, "mask_ratio": 0.75, "norm_pix_loss": True,
            "mean": [0.5], "std": [0.5]}
    with pytest.raises(ConfigError, match=r"decoder depth must lie in \[1, 64\], got 1000000"):
        build_mae(spec)


def test_integer_weights_in_float_parameters_are_refused_naming_the_tensor(tmp_path):
    model = _small_convnet()
    as_ints = {key: value.to(torch.int32) if value.is_floating_point() else value
               for key, value in model.state_dict().items()}
    path = _weights_file(tmp_path / "ints.safetensors", as_ints, model.spec)
    with pytest.raises(ArtifactError, match=r"of another kind of number \(first: net.classifier.bias holds int, "
                                            r"the model float\)"):
        load_classifier(str(path))
    # half precision is the same kind of number: it loads
    halves = {key: value.half() if value.is_floating_point() else value for key, value in model.state_dict().items()}
    loaded = load_classifier(str(_weights_file(tmp_path / "half.safetensors", halves, model.spec)))
    assert loaded.model.net.classifier.bias.dtype == torch.float32


def test_integer_weights_are_exit_3_on_the_command_line(cli, tmp_path):
    model = _small_convnet()
    as_ints = {key: value.to(torch.int32) for key, value in model.state_dict().items()}
    path = _weights_file(tmp_path / "ints.safetensors", as_ints, model.spec)
    result = cli("eval", str(path), "--data", "digits")
    assert result.code == 3, result.stderr
    assert "holds int, the model float" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("override", ["model.options.width=1000000000", "model.options.depth=1000000"])
def test_a_huge_size_on_the_command_line_is_a_config_error(memory_limited, override):
    result = memory_limited(f"""
        from mltk.cli.main import main
        main(["train", "supervised", {override!r}])
    """)
    assert result.code == 2, result.stderr
    assert "must be at most" in result.stderr and "model.options" in result.stderr


def test_a_typo_under_model_options_is_listed_with_the_other_config_errors(cli):
    result = cli("train", "supervised", "model.options.widht=8", "train.epochs=0")
    assert result.code == 2
    assert "2 problems" in result.stderr
    assert "model.options: unknown option 'widht' (did you mean 'width'?)" in result.stderr
    assert "train.epochs: must be positive" in result.stderr
