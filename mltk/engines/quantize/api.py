"""The Python entry point of ``mltk quantize``: resolve a config, run it through ``run_recipe``.

    from mltk.engines.quantize import quantize
    results = quantize("mobilenet-v2-digits", overrides=["quant.bits=1", "quant.method=bitat"])
    results["artifact"], results["metrics"]["test_accuracy"]
"""

from __future__ import annotations

from pathlib import Path

from mltk.core import config as config_mod
from mltk.core.artifact import open_artifact
from mltk.core.catalog import get_recipe, preset_names, preset_path
from mltk.core.console import Reporter
from mltk.core.errors import MltkError
from mltk.core.paths import runs_root as default_runs_root
from mltk.core.registry import Registry, validate_name
from mltk.core.run_recipe import run_recipe
from mltk.engines.quantize.config import QuantizeConfig
from mltk.engines.quantize.recipe import RECIPE_NAME
from mltk.engines.quantize.source import is_foreign_file

DEFAULT_PRESET = "digits"


def quantize_presets() -> list[str]:
    return preset_names(RECIPE_NAME)


def resolve_config(*, preset: str | None = None, config_file: Path | None = None,
                   overrides: list[str] | tuple[str, ...] = ()) -> QuantizeConfig:
    """The run's config: defaults < preset < config file < overrides, checked in full.

    Without ``preset`` the budget is the preset sized for the run's data (``data.name``, else the dataset on
    the model's card), or the digits preset when none is: the run then says so (``budget_for``).
    """
    if preset is None:
        preset = preset_for_data(_data_name(overrides))
    cfg = config_mod.resolve(QuantizeConfig, preset=preset_path(RECIPE_NAME, preset),
                             config_file=config_file, overrides=list(overrides))
    validate_name(cfg.artifact_name())
    return cfg


def preset_for_data(data: str | None) -> str:
    """The first preset whose budget is sized for ``data`` (its ``budget_for``), else the default."""
    if data:
        for name in quantize_presets():
            if config_mod.resolve(QuantizeConfig, preset=preset_path(RECIPE_NAME, name)).budget_for == data:
                return name
    return DEFAULT_PRESET


def _data_name(overrides: list[str] | tuple[str, ...]) -> str | None:
    """The dataset a run will use: ``data.name=`` among the overrides, else the one on the model's card
    (None when neither says; errors in the reference are reported later, where it is loaded)."""
    given = {key: value for key, _, value in (o.partition("=") for o in overrides)}
    if given.get("data.name"):
        return given["data.name"].strip("'\"").split(":")[0]
    ref = given.get("model.ref", "").strip("'\"")
    if not ref or is_foreign_file(ref):
        return None
    try:
        card = open_artifact(ref, lone_files=True).card
    except MltkError:
        return None
    name = ((card.get("task") or {}).get("data") or {}).get("name")
    return name.split(":")[0] if isinstance(name, str) else None


def quantize(ref: str, *, overrides: list[str] | tuple[str, ...] = (), preset: str | None = None,
             config_file: Path | None = None, resume: str | None = None, runs_root: Path | None = None,
             registry: Registry | None = None, reporter: Reporter | None = None) -> dict:
    """Quantize the model ``ref``; the results dict of :func:`run_recipe` (artifact, metrics, run_dir)."""
    cfg = resolve_config(preset=preset, config_file=config_file, overrides=[f"model.ref={ref}", *overrides])
    return run_recipe(get_recipe(RECIPE_NAME), cfg, resume=resume, runs_root=runs_root or default_runs_root(),
                      registry=registry or Registry(), reporter=reporter or Reporter())
