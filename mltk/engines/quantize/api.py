"""The Python entry point of ``mltk quantize``: resolve a config, run it through ``run_recipe``.

    from mltk.engines.quantize import quantize
    results = quantize("mobilenet-v2-digits", overrides=["quant.bits=1", "quant.method=bitat"])
    results["artifact"], results["metrics"]["test_accuracy"]
"""

from __future__ import annotations

from pathlib import Path

from mltk.core import config as config_mod
from mltk.core.catalog import get_recipe, preset_names, preset_path
from mltk.core.console import Reporter
from mltk.core.paths import runs_root as default_runs_root
from mltk.core.registry import Registry, validate_name
from mltk.core.run_recipe import run_recipe
from mltk.engines.quantize.config import QuantizeConfig
from mltk.engines.quantize.recipe import RECIPE_NAME

DEFAULT_PRESET = "digits"


def quantize_presets() -> list[str]:
    return preset_names(RECIPE_NAME)


def resolve_config(*, preset: str | None = None, config_file: Path | None = None,
                   overrides: list[str] | tuple[str, ...] = ()) -> QuantizeConfig:
    """The run's config: defaults < preset < config file < overrides, checked in full."""
    cfg = config_mod.resolve(QuantizeConfig, preset=preset_path(RECIPE_NAME, preset or DEFAULT_PRESET),
                             config_file=config_file, overrides=list(overrides))
    validate_name(cfg.artifact_name())
    return cfg


def quantize(ref: str, *, overrides: list[str] | tuple[str, ...] = (), preset: str | None = None,
             config_file: Path | None = None, resume: str | None = None, runs_root: Path | None = None,
             registry: Registry | None = None, reporter: Reporter | None = None) -> dict:
    """Quantize the model ``ref``; the results dict of :func:`run_recipe` (artifact, metrics, run_dir)."""
    cfg = resolve_config(preset=preset, config_file=config_file, overrides=[f"model.ref={ref}", *overrides])
    return run_recipe(get_recipe(RECIPE_NAME), cfg, resume=resume, runs_root=runs_root or default_runs_root(),
                      registry=registry or Registry(), reporter=reporter or Reporter())
