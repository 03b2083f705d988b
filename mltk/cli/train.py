"""``mltk train <recipe> [--preset P] [--config FILE] [key=value ...]``."""

from __future__ import annotations

from pathlib import Path

import typer

from mltk.cli.render import FormatOption, emit, format_value, key_values, reporter_for, run_rows
from mltk.core import config as config_mod
from mltk.core import distributed
from mltk.core.catalog import get_recipe, preset_path
from mltk.core.paths import runs_root
from mltk.core.registry import Registry, validate_name
from mltk.core.run_recipe import run_recipe

_DIST = "Distributed (torchrun)"


def train(
    recipe: str = typer.Argument(..., help="recipe name (see `mltk recipes`)"),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE]...",
                                          help="config overrides with dotted keys: optim.lr=0.1 data=cifar10"),
    preset: str = typer.Option(None, "--preset", "-p", help="a preset shipped with the recipe (default: its default)"),
    config_file: Path = typer.Option(None, "--config", "-c", help="YAML file over the preset"),
    resume: str = typer.Option(None, "--resume",
                               help="auto (same config, unfinished), last (newest run), or a run/ckpt folder"),
    runs_dir: Path = typer.Option(None, "--runs-dir", help="where run folders go [default: $MLTK_RUNS or ./runs]"),
    fmt: str = FormatOption,
    nproc_per_node: int = typer.Option(1, "--nproc-per-node", rich_help_panel=_DIST,
                                       help="processes on this machine (gloo on CPU, nccl on CUDA)"),
    nnodes: str = typer.Option("1", "--nnodes", rich_help_panel=_DIST, help="number of machines, or MIN:MAX"),
    node_rank: int = typer.Option(0, "--node-rank", rich_help_panel=_DIST),
    rdzv_backend: str = typer.Option("c10d", "--rdzv-backend", rich_help_panel=_DIST),
    rdzv_endpoint: str = typer.Option(None, "--rdzv-endpoint", rich_help_panel=_DIST, help="host:port"),
    rdzv_id: str = typer.Option(None, "--rdzv-id", rich_help_panel=_DIST),
    master_addr: str = typer.Option(None, "--master-addr", rich_help_panel=_DIST),
    master_port: int = typer.Option(None, "--master-port", rich_help_panel=_DIST),
    max_restarts: int = typer.Option(0, "--max-restarts", rich_help_panel=_DIST),
) -> None:
    """Train a recipe; prints the results and stores the model in the registry."""
    reporter = reporter_for(fmt)
    entry = get_recipe(recipe)
    preset_file = preset_path(entry.name, preset or entry.default_preset)
    overrides = list(overrides or [])
    # Resolve before anything starts, so a bad key fails fast, on one process.
    cfg = config_mod.resolve(entry.config_class, preset=preset_file, config_file=config_file,
                             overrides=overrides)
    if hasattr(cfg, "artifact_name"):
        validate_name(cfg.artifact_name())
    launch = distributed.LaunchOptions(
        nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank, rdzv_backend=rdzv_backend,
        rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id, master_addr=master_addr, master_port=master_port,
        max_restarts=max_restarts)
    if launch.wanted and not distributed.under_torchrun():
        worker = ["train", entry.name, *overrides, "--preset", preset_file.stem, "--format", fmt]
        if config_file:
            worker += ["--config", str(Path(config_file).resolve())]
        if resume:
            worker += ["--resume", resume]
        if runs_dir:
            worker += ["--runs-dir", str(Path(runs_dir).resolve())]
        raise typer.Exit(distributed.launch(launch, worker))

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
