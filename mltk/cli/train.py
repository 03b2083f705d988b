"""``mltk train <recipe> [--preset P] [--config FILE] [key=value ...]``."""

from __future__ import annotations

from pathlib import Path

import typer

from mltk.cli.data_options import DataDirOption, DownloadOption, data_overrides
from mltk.cli.launching import relaunch_if_asked, with_launch_options
from mltk.cli.render import FormatOption, emit, format_value, key_values, reporter_for, run_rows
from mltk.core import config as config_mod
from mltk.core import distributed
from mltk.core.catalog import get_recipe, preset_path
from mltk.core.paths import runs_root
from mltk.core.registry import Registry, validate_name
from mltk.core.run_recipe import run_recipe


@with_launch_options
def train(
    recipe: str = typer.Argument(..., help="recipe name (see `mltk recipes`)"),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE]...",
                                          help="config overrides with dotted keys: optim.lr=0.1 data=cifar10"),
    preset: str = typer.Option(None, "--preset", "-p", help="a preset shipped with the recipe (default: its default)"),
    config_file: Path = typer.Option(None, "--config", "-c", help="YAML file over the preset"),
    resume: str = typer.Option(None, "--resume",
                               help="auto (same config, unfinished), last (newest run), or a run/ckpt folder"),
    runs_dir: Path = typer.Option(None, "--runs-dir", help="where run folders go [default: $MLTK_RUNS or ./runs]"),
    data_dir: str = DataDirOption,
    download: bool = DownloadOption,
    fmt: str = FormatOption,
    launch: distributed.LaunchOptions = None,
) -> None:
    """Train a recipe; prints the results and stores the model in the registry."""
    reporter = reporter_for(fmt)
    entry = get_recipe(recipe)
    preset_file = preset_path(entry.name, preset or entry.default_preset)
    overrides = data_overrides(data_dir, download) + list(overrides or [])
    # Resolve before anything starts, so a bad key fails fast, on one process.
    cfg = config_mod.resolve(entry.config_class, preset=preset_file, config_file=config_file,
                             overrides=overrides)
    if hasattr(cfg, "artifact_name"):
        validate_name(cfg.artifact_name())
    relaunch_if_asked(launch)

    results = run_recipe(entry, cfg, resume=resume, runs_root=runs_dir or runs_root(),
                         registry=Registry(), reporter=reporter)
    if not reporter.is_main:
        return

    def human(console):
        metrics = results["metrics"]
        rows = [(key.replace("_", " "), value) for key, value in metrics.items()]
        rows += run_rows(results)
        console.print(key_values(f"mltk train {entry.name}", ((k, format_value(v)) for k, v in rows)))

    emit(fmt, results, human, quiet=results["artifact"])
