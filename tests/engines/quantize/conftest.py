"""A small trained float classifier that the quantize tests start from (trained once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mltk.core import config
from mltk.core.catalog import get_recipe, preset_path
from mltk.core.console import Reporter
from mltk.core.registry import Registry
from mltk.core.run_recipe import run_recipe

FP_OVERRIDES = ["model.options.width=16", "model.options.depth=3", "model.options.norm=batchnorm",
                "train.epochs=6", "train.batch_size=32", "optim.lr=0.05", "name=fp-convnet"]


@pytest.fixture(scope="session")
def fp_digits(tmp_path_factory) -> Path:
    """An exported artifact folder (card.json + model.safetensors): a ConvNet-3 of width 16 on digits.

    Three conv layers and a classifier: the first conv and the classifier stay
    float, so two layers are quantized.
    """
    root = tmp_path_factory.mktemp("fp-digits")
    entry = get_recipe("supervised")
    cfg = config.resolve(entry.config_class, preset=preset_path("supervised", "digits"), overrides=FP_OVERRIDES)
    registry = Registry(root / "home")
    results = run_recipe(entry, cfg, resume=None, runs_root=root / "runs", registry=registry,
                         reporter=Reporter("quiet"))
    assert results["metrics"]["test_accuracy"] > 0.85, results["metrics"]
    out = root / "fp-convnet"
    registry.export(results["artifact"], out)
    return out
