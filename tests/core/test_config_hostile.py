"""Hostile config files: alias bombs, repeated keys, binary files and huge values give one bounded,
exit-2 error, quickly."""

from __future__ import annotations

import time

import pytest

from mltk.core import config
from mltk.core.errors import ConfigError
from mltk.engines.supervised.config import SupervisedConfig

BILLION_LAUGHS = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
) + "\n"


def test_an_alias_bomb_in_a_config_file_is_refused_at_once(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS.replace("i: &i", "train: &i"))
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases expand to more than"):
        config.resolve(SupervisedConfig, config_file=path)
    assert time.perf_counter() - started < 5


def test_an_alias_bomb_as_an_override_value_is_refused():
    bomb = "[&a [1, 1, 1, 1, 1, 1, 1, 1, 1]"
    for level in "bcdef":  # each level holds nine of the one before: 9^6 values in all
        previous = chr(ord(level) - 1)
        bomb += f", &{level} [{', '.join([f'*{previous}'] * 9)}]"
    bomb += "]"
    with pytest.raises(ConfigError) as info:
        config.resolve(SupervisedConfig, overrides=[f"train.epochs={bomb}"])
    assert len(str(info.value)) < 2000  # the value is shown bounded, never expanded


def test_a_huge_shared_value_in_an_error_is_shown_bounded(tmp_path):
    path = tmp_path / "big.yaml"
    # 6,561 values under one alias: below the expansion limit, 30 KB once written out
    path.write_text("\n".join(BILLION_LAUGHS.splitlines()[:4]) + "\ntrain: {epochs: *d}\n")
    with pytest.raises(ConfigError) as info:
        config.resolve(SupervisedConfig, config_file=path)
    assert "train.epochs: expected an integer" in str(info.value) and len(str(info.value)) < 5000


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("optim:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"line 3: .*the key 'lr' is given twice \(first on line 2\)"):
        config.resolve(SupervisedConfig, config_file=path)


def test_a_binary_config_file_is_a_config_error(tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="not a text file|not valid YAML"):
        config.resolve(SupervisedConfig, config_file=path)


@pytest.mark.parametrize("override,message", [
    ("train.epochs=0", "train.epochs: must be positive, got 0"),
    ("train.epochs=-1", "train.epochs: must be positive, got -1"),
    ("optim.lr=nan", "optim.lr: must be a finite number, got nan"),
    ("optim.lr=.inf", "optim.lr: must be a finite number, got inf"),
    ("train.batch_size=0", "train.batch_size: must be positive, got 0"),
    ("optim.label_smoothing=1.5", "optim.label_smoothing: must lie in [0, 1], got 1.5"),
])
def test_values_outside_their_range_are_config_errors(override, message):
    with pytest.raises(ConfigError) as info:
        config.resolve(SupervisedConfig, overrides=[override])
    assert message in str(info.value)


def test_every_range_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as info:
        config.resolve(SupervisedConfig, overrides=["train.epochs=0", "optim.lr=-1", "train.ckpt_minutes=0"])
    text = str(info.value)
    assert all(key in text for key in ("train.epochs", "optim.lr", "train.ckpt_minutes"))
