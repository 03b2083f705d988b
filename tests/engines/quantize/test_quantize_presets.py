"""Every shipped quantize preset resolves, says the command that runs it, and keeps the methods comparable."""

from __future__ import annotations

import pytest

from mltk.core.catalog import preset_path
from mltk.engines.quantize import quantize_presets, resolve_config
from mltk.engines.quantize.methods import method_settings


@pytest.mark.parametrize("preset", quantize_presets())
def test_preset_resolves_for_every_method(preset):
    header = preset_path("quantize", preset).read_text().splitlines()[0]
    assert header.startswith("# mltk quantize "), "a preset starts with the command that runs it"
    budgets = set()
    for method in ("bitat", "xnor", "reactnet"):
        cfg = resolve_config(preset=preset, overrides=["model.ref=parent", f"quant.method={method}"])
        assert method_settings(cfg).name == method
        budgets.add((cfg.train, cfg.kd, cfg.calibration))
    assert len(budgets) == 1  # a preset is one budget, whatever the method


def test_default_names_say_bits_and_method():
    assert resolve_config(overrides=["model.ref=mbv2-digits:3"]).artifact_name() == "mbv2-digits-w1a1-bitat"
    assert resolve_config(overrides=["model.ref=/tmp/m.pt", "quant.bits=4"]).artifact_name() == "m-w4a32-uniform"


@pytest.mark.parametrize("overrides", [["quant.float_shortcuts=false"], ["quant.bits=4"], ["quant.act_bits=32"],
                                       []])
def test_float_adaptation_needs_shortcuts_to_adapt_to(overrides):
    from mltk.core.errors import ConfigError

    adapt = ["model.ref=parent", "train.adapt_epochs=2", *overrides]
    if not overrides:  # W1/A1 with float shortcuts (the defaults): accepted
        assert resolve_config(overrides=adapt).train.adapt_epochs == 2
        return
    with pytest.raises(ConfigError, match="train.adapt_epochs"):
        resolve_config(overrides=adapt)
    with pytest.raises(ConfigError, match="train.adapt_epochs"):
        resolve_config(overrides=["model.ref=parent", "train.adapt_epochs=-1"])


def test_without_a_preset_the_budget_is_the_one_sized_for_the_data():
    from mltk.engines.quantize.api import preset_for_data

    assert preset_for_data("cifar10") == "cifar10-cpu" and preset_for_data("digits") == "digits"
    assert preset_for_data("mnist") == "digits" and preset_for_data(None) == "digits"  # none sized for it
    cifar = resolve_config(overrides=["model.ref=mobilenet.pt", "data.name=cifar10"])
    assert cifar.budget_for == "cifar10" and cifar.train.epochs == 5
    assert resolve_config(preset="digits", overrides=["model.ref=m.pt", "data.name=cifar10"]).budget_for == "digits"


def test_every_preset_says_what_data_its_budget_is_sized_for():
    for preset in quantize_presets():
        assert resolve_config(preset=preset, overrides=["model.ref=parent"]).budget_for
