"""Fixtures of the MIM engine's tests."""

from __future__ import annotations

import pytest
import torch

from mltk.core.registry import Registry
from mltk.nn import build_model
from mltk.nn.artifacts import classifier_artifact


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tests' ViTs are tiny: one thread beats two, which spin-wait for each other on shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def convnet_classifier(mltk_env) -> str:
    """A (untrained) ConvNet classifier artifact for digits, saved without training: its reference."""
    torch.manual_seed(0)
    model = build_model("convnet", num_classes=10, in_channels=1, image_size=8, width=8, depth=1)
    files, card = classifier_artifact(model, engine="supervised", data={"name": "digits"},
                                      class_names=[str(i) for i in range(10)], config={}, config_sha256="",
                                      metrics={"test_accuracy": 0.1}, primary_metric="test_accuracy",
                                      parent="dataset:digits", relation="trained")
    return Registry().save("convnet-digits", files=files, card=card).ref
