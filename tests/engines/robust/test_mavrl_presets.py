"""Every shipped mavrl preset is a valid config (keys, types and ranges)."""

from __future__ import annotations

import pytest

from mltk.core import config
from mltk.core.catalog import get_recipe, preset_names, preset_path
from mltk.engines.robust.config import MavrlConfig


@pytest.mark.parametrize("preset", preset_names("mavrl"))
def test_preset_resolves(preset):
    cfg = config.resolve(get_recipe("mavrl").config_class, preset=preset_path("mavrl", preset))
    assert isinstance(cfg, MavrlConfig) and cfg.method == "mavrl"


def test_the_presets_include_cpu_and_gpu_settings():
    assert {"omniglot", "cifar10", "cifar-fs-gpu"} <= set(preset_names("mavrl"))
