"""A Hugging Face LM folder whose config.json asks for a far larger model than its weights is refused unbuilt."""

from __future__ import annotations

import json
import shutil


def test_an_lm_config_asking_for_a_huge_model_is_refused_before_building(detox_files, mltk_env, load_limited):
    folder = mltk_env / "huge-lm"
    shutil.copytree(detox_files["lm"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["n_embd"] = 10**6  # 10^10 parameters and more: terabytes if built
    (folder / "config.json").write_text(json.dumps(config))
    result = load_limited("from mltk.nn.language_models.causal_lm import load_causal_lm",
                          f"load_causal_lm({str(folder)!r})")
    assert result.code == 3, result.stderr
    assert "config.json asks for" in result.stdout and "parameters but the weight files hold" in result.stdout
