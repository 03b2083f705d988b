"""``mltk condense DATASET --ipc N [--method kfs|dm|random|herding] [--export DIR] [key=value ...]``."""

from __future__ import annotations

from pathlib import Path

import typer

from mltk.cli.data_options import DataDirOption, DownloadOption, data_overrides
from mltk.cli.launching import relaunch_if_asked, with_launch_options
from mltk.cli.render import FormatOption, emit, format_value, key_values, reporter_for, run_rows
from mltk.core import config as config_mod
from mltk.core import distributed
from mltk.core.catalog import get_recipe, preset_names, preset_path
from mltk.core.paths import runs_root
from mltk.core.registry import Registry, validate_name
from mltk.core.run_recipe import run_recipe
from mltk.engines.condense import export_condensed, load_condensed

RECIPE = "condense"


@with_launch_options
def condense(
    dataset: str = typer.Argument(..., help="dataset name (see `mltk data ls`), imagefolder:PATH or npz:PATH"),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE]...",
                                          help="config overrides: kfs.decoders=8 match.iterations=2000 seed=1"),
    ipc: int = typer.Option(None, "--ipc", help="budget: images per class, in stored floats [default: the preset's]"),
    method: str = typer.Option(None, "--method", help="kfs, dm, random or herding [default: the preset's, kfs]"),
    export: Path = typer.Option(None, "--export", help="also write the decoded images here (condensed.npz, grid.png)"),
    preset: str = typer.Option(None, "--preset", "-p",
                               help="condense preset [default: the one named after the dataset, if any]"),
    config_file: Path = typer.Option(None, "--config", "-c", help="YAML file over the preset"),
    resume: str = typer.Option(None, "--resume",
                               help="auto (same config, unfinished), last (newest run), or a run/ckpt folder"),
    runs_dir: Path = typer.Option(None, "--runs-dir", help="where run folders go [default: $MLTK_RUNS or ./runs]"),
    data_dir: str = DataDirOption,
    download: bool = DownloadOption,
    fmt: str = FormatOption,
    launch: distributed.LaunchOptions = None,
) -> None:
    """Condense a dataset into IPC images' worth of stored floats; store it as an artifact.

    KFS stores latent codes and tiny shared decoders and decodes many more
    images than the budget's IPC; dm, random and herding store IPC images per
    class. Evaluate the result with `mltk eval REF --protocol condensed`.
    """
    reporter = reporter_for(fmt)
    entry = get_recipe(RECIPE)
    chosen = preset or _preset_for(dataset)
    preset_file = preset_path(RECIPE, chosen) if chosen else None
    if preset_file is None:
        reporter.warn(f"no condense preset for {dataset!r}: using the defaults (ConvNet-3, "
                      f"see `mltk cp {RECIPE} my.yaml`); choose one with --preset")
    user_overrides = list(overrides or [])
    flags = [f"data.name={dataset}"] + ([f"ipc={ipc}"] if ipc is not None else []) + \
        ([f"method={method}"] if method is not None else []) + data_overrides(data_dir, download)
    # Resolve before anything starts, so a bad key fails fast, on one process.
    cfg = config_mod.resolve(entry.config_class, preset=preset_file, config_file=config_file,
                             overrides=flags + user_overrides)
    validate_name(cfg.artifact_name())
    relaunch_if_asked(launch)

    results = run_recipe(entry, cfg, resume=resume, runs_root=runs_dir or runs_root(), registry=Registry(),
                         reporter=reporter)
    if not reporter.is_main:
        return
    if export is not None:
        written = export_condensed(load_condensed(results["artifact"]), export)
        results["exported"] = [str(p) for p in written]

    def human(console):
        rows = [(key.replace("_", " "), value) for key, value in results["metrics"].items()]
        rows += run_rows(results)
        rows += [("exported", path) for path in results.get("exported", [])]
        console.print(key_values(f"mltk condense {dataset} --ipc {cfg.ipc} --method {cfg.method}",
                                 ((k, format_value(v)) for k, v in rows)))

    emit(fmt, results, human, quiet=results["artifact"])


def _preset_for(dataset: str) -> str | None:
    """The preset named after the dataset (``cifar10`` for cifar10), or None."""
    name = dataset.split(":")[0].lower()
    return name if name in preset_names(RECIPE) else None
