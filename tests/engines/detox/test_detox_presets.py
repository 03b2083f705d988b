"""Every detox preset resolves, starts with its command, and the presets keep the judge's data apart;
out-of-range values are refused when the config is read."""

from __future__ import annotations

import pytest

from mltk.core import config
from mltk.core.catalog import get_recipe, preset_names, preset_path
from mltk.core.errors import ConfigError

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


@pytest.mark.parametrize("recipe,overrides,problems", [
    ("lm", ["data.part=[0.5, 0.2]", "data.val_fraction=1", "model.n_head=3", "model.dropout=1.5"],
     ["data.part:", "data.val_fraction:", "model.n_embd:", "model.dropout:"]),
    ("lm", ["train.seq_len=256", "model.n_positions=128"], ["train.seq_len: 256 is longer than model.n_positions"]),
    ("adlm", ["adlm.filter_p=0", "adlm.lambda_ewc=-1", "optim.warmup_steps=-1", "train.log_every=0"],
     ["adlm.filter_p:", "adlm.lambda_ewc:", "optim.warmup_steps:", "train.log_every:"]),
    ("dexperts", ["filter_p=1.5", "alpha=inf"], ["alpha:", "filter_p:"]),
    ("toxicity-scorer", ["model.ngram_min=6", "model.features=8", "model.c=0", "model.test_fraction=1"],
     ["model.ngram_min, ngram_max:", "model.features:", "model.c:", "model.test_fraction:"]),
])
def test_out_of_range_values_are_all_listed_before_anything_runs(recipe, overrides, problems):
    with pytest.raises(ConfigError) as info:
        config.resolve(get_recipe(recipe).config_class, overrides=overrides)
    assert info.value.exit_code == 2
    found = info.value.problems
    assert len(found) == len(problems) and all(any(f.startswith(p) for f in found) for p in problems), found
