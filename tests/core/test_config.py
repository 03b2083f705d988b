"""Config layering, overrides and the all-problems-at-once error."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from mltk.core import config
from mltk.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Data:
    name: str = "digits"
    holdout: float = 0.0


@dataclasses.dataclass(frozen=True)
class Optim:
    lr: float = 0.1
    schedule: Literal["cosine", "step"] = "cosine"


@dataclasses.dataclass(frozen=True)
class Cfg:
    seed: int = 0
    tag: str | None = None
    mean: list[float] | None = None
    options: dict = dataclasses.field(default_factory=dict)
    data: Data = dataclasses.field(default_factory=Data)
    optim: Optim = dataclasses.field(default_factory=Optim)


def test_precedence_defaults_preset_file_overrides(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text("seed: 1\noptim: {lr: 0.5}\ndata: {holdout: 0.1}\n")
    user = tmp_path / "user.yaml"
    user.write_text("seed: 2\noptim:\n  lr: 0.25\n")
    cfg = config.resolve(Cfg, preset=preset, config_file=user, overrides=["optim.lr=0.01"])
    assert cfg.seed == 2  # file over preset
    assert cfg.optim.lr == 0.01  # override over file
    assert cfg.data.holdout == 0.1  # preset over default
    assert cfg.optim.schedule == "cosine"  # default kept


def test_override_values_are_typed():
    cfg = config.resolve(Cfg, overrides=["seed=3", "tag=null", "mean=[0.5,0.25]", "optim.lr=1e-3",
                                         "options.width=64"])
    assert cfg.seed == 3 and cfg.tag is None and cfg.mean == [0.5, 0.25]
    assert cfg.optim.lr == pytest.approx(1e-3)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.options == {"width": 64}


def test_section_shorthand_sets_its_name():
    cfg = config.resolve(Cfg, overrides=["data=cifar10", "data.holdout=5000"])
    assert cfg.data == Data(name="cifar10", holdout=5000.0)
    cfg = config.resolve(Cfg, overrides=["data.holdout=0.2", "data=svhn"])
    assert cfg.data == Data(name="svhn", holdout=0.2)


def test_every_problem_listed_once_with_nearest_key():
    with pytest.raises(ConfigError) as info:
        config.resolve(Cfg, overrides=["optim.lrr=0.1", "seed=abc", "optim.schedule=cosin", "sed=1"])
    problems = info.value.problems
    assert len(problems) == 4
    text = " | ".join(problems)
    assert "optim.lrr: unknown key; did you mean 'optim.lr'?" in text
    assert "seed: expected an integer, got 'abc'" in text
    assert "did you mean 'cosine'" in text
    assert "sed: unknown key; did you mean 'seed'?" in text
    assert info.value.exit_code == 2


def test_bad_override_syntax_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not key=value"):
        config.resolve(Cfg, overrides=["seed"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.resolve(Cfg, config_file=bad)
    with pytest.raises(ConfigError, match="no such file"):
        config.resolve(Cfg, config_file=tmp_path / "missing.yaml")


def test_bool_is_not_an_int_and_int_accepted_for_float():
    with pytest.raises(ConfigError, match="expected an integer"):
        config.resolve(Cfg, overrides=["seed=true"])
    assert config.resolve(Cfg, overrides=["optim.lr=1"]).optim.lr == 1.0


def test_round_trip_through_yaml_and_hash(tmp_path):
    cfg = config.resolve(Cfg, overrides=["seed=5", "data=mnist", "mean=[0.1]"])
    path = tmp_path / "resolved.yaml"
    path.write_text(config.to_yaml(cfg))
    again = config.resolve(Cfg, config_file=path)
    assert again == cfg
    assert config.config_hash(again) == config.config_hash(cfg)
    assert config.config_hash(cfg) != config.config_hash(config.resolve(Cfg, overrides=["seed=6"]))
    assert config.config_hash(cfg, ignore=("seed",)) == config.config_hash(
        config.resolve(Cfg, overrides=["seed=6", "data=mnist", "mean=[0.1]"]), ignore=("seed",))
