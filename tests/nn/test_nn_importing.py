"""Foreign weights into the registry from Python (``mltk.nn.importing``), as ``mltk import`` does it."""

from __future__ import annotations

import pytest
import torch

from mltk.core.errors import ArtifactError, UsageError
from mltk.core.registry import Registry
from mltk.nn import build_model
from mltk.nn.artifacts import load_classifier
from mltk.nn.importing import import_weights, resolve_task

DIGITS = {"num_classes": 10, "in_channels": 1, "image_size": 8}


@pytest.fixture
def plain_state_dict(tmp_path):
    """A ConvNet's weights in the architecture's own key names, saved as a plain .pt state_dict."""
    torch.manual_seed(0)
    model = build_model("convnet", **DIGITS, width=8, depth=2).eval()
    path = tmp_path / "my convnet.pt"
    torch.save(model.net.state_dict(), path)
    return model, path


def test_imported_weights_come_back_as_the_same_classifier(tmp_path, plain_state_dict):
    model, path = plain_state_dict
    registry = Registry(tmp_path / "home")
    record = import_weights(path, arch="convnet", data="digits", options={"width": 8, "depth": 2},
                            registry=registry)
    assert record.ref == "my-convnet:1"
    card = record.card()
    assert card["lineage"] == {"parent": "file:my convnet.pt", "relation": "imported"}
    assert card["task"]["class_names"] == [str(i) for i in range(10)]
    loaded = load_classifier(record.ref, registry)
    images = torch.rand(4, 1, 8, 8)
    assert torch.equal(loaded.model.eval()(images), model(images))


def test_the_task_comes_from_the_dataset_with_explicit_numbers_in_its_place():
    assert resolve_task("digits") == resolve_task(None, **DIGITS, class_names=[str(i) for i in range(10)])
    assert resolve_task("digits", image_size=16).image_size == 16
    with pytest.raises(UsageError, match="--num-classes, --in-channels, --image-size"):
        resolve_task(None)
    with pytest.raises(UsageError, match="shape not known"):
        resolve_task("imagefolder:somewhere")
    assert resolve_task("imagefolder:somewhere", num_classes=3, in_channels=3, image_size=32).num_classes == 3
    with pytest.raises(UsageError, match="2 class names for 10 classes"):
        resolve_task("digits", class_names=["a", "b"])


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path, plain_state_dict):
    _, path = plain_state_dict
    with pytest.raises(ArtifactError, match="do not fit"):
        import_weights(path, arch="convnet", data="digits", options={"width": 16, "depth": 2},
                       registry=Registry(tmp_path / "home"))
    assert Registry(tmp_path / "home").list() == []

