"""A W1/A1 MobileNetV2 learns: the regression test for binary MobileNets stuck at chance.

Binarizing the inputs of every layer of MobileNetV2 but the stem and the
classifier left it at 10-14% on digits whatever the method; the default plan
keeps the blocks that narrow below ``quant.min_binary_channels`` in float.
"""

from __future__ import annotations

import pytest

from mltk.core import config
from mltk.core.catalog import get_recipe, preset_path
from mltk.core.console import Reporter
from mltk.core.registry import Registry
from mltk.core.run_recipe import run_recipe
from mltk.engines.quantize import quantize

PARENT = ["data.name=digits", "model.arch=mobilenet_v2", "model.options.width_mult=0.5",
          "model.options.stem_stride=1", "train.epochs=10", "train.batch_size=64", "optim.lr=0.02",
          "train.augment=crop", "name=mbv2"]


@pytest.mark.slow
@pytest.mark.timeout(900)  # about 35 s on two idle cores; a loaded machine takes several times that
def test_w1a1_mobilenet_v2_learns_far_above_chance(mltk_env, tmp_path):
    registry = Registry()
    entry = get_recipe("supervised")
    cfg = config.resolve(entry.config_class, preset=preset_path("supervised", "cifar10-mobilenetv2"),
                         overrides=PARENT)
    parent = run_recipe(entry, cfg, resume=None, runs_root=tmp_path / "runs", registry=registry,
                        reporter=Reporter("quiet"))
    assert parent["metrics"]["test_accuracy"] > 0.45, parent["metrics"]  # a short parent: about 0.6
    results = quantize(parent["artifact"], overrides=["quant.method=xnor", "train.epochs=4"],
                       runs_root=tmp_path / "runs", registry=registry, reporter=Reporter("quiet"))
    metrics = results["metrics"]
    assert metrics["bits"] == metrics["act_bits"] == 1 and metrics["quantized_layers"] > 20
    # chance is 0.1; at this budget 0.53 measured, and 0.11 with every layer binarized (min_binary_channels=0)
    assert metrics["test_accuracy"] > 0.3, metrics
