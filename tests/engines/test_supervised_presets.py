"""Every shipped preset is a valid config naming a real architecture, and the default one meets its claim."""

from __future__ import annotations

import pytest

from mltk.core import config
from mltk.core.catalog import get_recipe, preset_names, preset_path, recipes
from mltk.data import DataSpec, dataset_names
from mltk.nn import arch_names

PRESETS = [(r.name, p) for r in recipes() for p in r.presets()]


def test_every_recipe_has_its_default_preset():
    for entry in recipes():
        assert entry.default_preset in preset_names(entry.name)


@pytest.mark.parametrize("recipe,preset", PRESETS, ids=[f"{r}/{p}" for r, p in PRESETS])
def test_preset_resolves_and_names_known_parts(recipe, preset):
    path = preset_path(recipe, preset)
    header = path.read_text().splitlines()[0]
    # `mltk train RECIPE`, or the engine's own command (`mltk quantize MODEL`, `mltk condense DATASET`)
    assert header.startswith((f"# mltk train {recipe}", f"# mltk {recipe}")), \
        "a preset starts with the command that runs it"
    cfg = config.resolve(get_recipe(recipe).config_class, preset=path)
    # Image recipes name an architecture and a dataset; text recipes name files and LMs instead.
    if hasattr(getattr(cfg, "model", None), "arch"):
        assert cfg.model.arch in [*arch_names(), "auto"]  # auto: quantize infers it from the model it is given
    if isinstance(getattr(cfg, "data", None), DataSpec):
        assert cfg.data.name.split(":")[0] in {n.split(":")[0] for n in dataset_names()}


@pytest.mark.slow
def test_default_preset_reaches_its_stated_accuracy(cli):
    result = cli("train", "supervised", "--format", "json")
    assert result.code == 0, result.stderr
    assert result.json()["metrics"]["test_accuracy"] >= 0.97
