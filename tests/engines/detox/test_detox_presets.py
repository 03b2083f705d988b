"""Every detox preset resolves, starts with its command, and the presets keep the judge's data apart."""

from __future__ import annotations

import pytest

from mltk.core import config
from mltk.core.catalog import get_recipe, preset_names, preset_path

RECIPES = ("lm", "adlm", "dapt", "dexperts", "toxicity-scorer")
PRESETS = [(r, p) for r in RECIPES for p in preset_names(r)]


@pytest.mark.parametrize("recipe,preset", PRESETS, ids=[f"{r}/{p}" for r, p in PRESETS])
def test_preset_resolves_and_starts_with_its_command(recipe, preset):
    path = preset_path(recipe, preset)
    assert path.read_text().splitlines()[0].startswith(f"# mltk train {recipe}")
    cfg = config.resolve(get_recipe(recipe).config_class, preset=path)
    assert cfg.data.all_sources(), "every detox preset names its text"


def part(recipe: str, preset: str) -> tuple[float, float, int]:
    cfg = config.resolve(get_recipe(recipe).config_class, preset=preset_path(recipe, preset))
    return cfg.data.part[0], cfg.data.part[1], cfg.data.part_seed


def test_lm_detoxifiers_and_scorer_train_on_disjoint_parts():
    lm = part("lm", "tiny-toxic")
    scorer = part("toxicity-scorer", "davidson")
    for recipe in ("adlm", "dapt", "dexperts"):
        detox = part(recipe, "tiny-davidson")
        assert detox[2] == lm[2] == scorer[2], "the same seed, so the parts are of the same permutation"
        assert detox[0] >= lm[1] and scorer[0] >= detox[1]
