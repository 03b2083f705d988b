"""What is available and where: ``recipes``, ``cp``, ``env``, ``data ls``."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import typer

from mltk import __version__
from mltk.cli.render import FormatOption, check_format, emit, key_values, table
from mltk.core import config as config_mod
from mltk.core.catalog import parse_preset_ref, preset_path, protocols, recipes
from mltk.core.errors import UsageError
from mltk.core.paths import data_root, mltk_home, runs_root
from mltk.data.datasets import describe_datasets
from mltk.nn import describe_archs


def list_recipes(fmt: str = FormatOption) -> None:
    """List training recipes with their presets, evaluation protocols and architectures."""
    check_format(fmt)
    recipe_rows = [{"name": r.name, "description": r.description, "default_preset": r.default_preset,
                    "presets": r.presets()} for r in recipes()]
    protocol_rows = [{"name": p.name, "description": p.description} for p in protocols()]
    arch_rows = describe_archs()
    data = {"recipes": recipe_rows, "protocols": protocol_rows, "architectures": arch_rows}

    def human(console):
        console.print(table("recipes (mltk train RECIPE --preset P)", ("recipe", "presets", "description"),
                            [(r["name"], ", ".join(p + ("*" if p == r["default_preset"] else "")
                                                   for p in r["presets"]), r["description"])
                             for r in recipe_rows]))
        console.print()
        console.print(table("protocols (mltk eval REF --protocol P)", ("protocol", "description"),
                            [(p["name"], p["description"]) for p in protocol_rows]))
        console.print()
        console.print(table("architectures (model.arch=A)", ("arch", "description"),
                            [(a["name"], a["description"]) for a in arch_rows]))

    emit(fmt, data, human, quiet=[r["name"] for r in recipe_rows])


def cp(preset: str = typer.Argument(..., help="RECIPE or RECIPE/PRESET (see `mltk recipes`)"),
       dest: Path = typer.Argument(..., help="YAML file to write"),
       force: bool = typer.Option(False, "--force", help="overwrite an existing file")) -> None:
    """Write a preset with every config key spelled out, to edit and pass with --config."""
    recipe_name, preset_name = parse_preset_ref(preset)
    if dest.exists() and not force:
        raise UsageError(f"{dest} exists", hint="choose another file name or pass --force")
    source = preset_path(recipe_name, preset_name)
    header = "".join(line + "\n" for line in source.read_text().splitlines() if line.startswith("#"))
    entry = next(r for r in recipes() if r.name == recipe_name)
    cfg = config_mod.resolve(entry.config_class, preset=source)
    note = f"# every key of recipe {recipe_name!r}, preset {preset_name!r} applied; use with --config\n"
    dest.write_text(config_mod.to_yaml(cfg, header=header + note))
    print(dest)


def env(fmt: str = FormatOption) -> None:
    """A block describing this installation, to paste into a bug report."""
    check_format(fmt)
    import torch

    info = {
        "mltk": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "distributed_backends": [b for b, ok in (("gloo", torch.distributed.is_gloo_available()),
                                                 ("nccl", torch.distributed.is_nccl_available())) if ok],
    }
    for package in ("torchvision", "transformers", "safetensors", "numpy", "scikit-learn", "typer", "rich",
                    "pyyaml"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    info.update(MLTK_HOME=str(mltk_home()), MLTK_DATA=str(data_root()), MLTK_RUNS=str(runs_root()),
                MLTK_DEBUG=os.environ.get("MLTK_DEBUG"))

    def human(console):
        console.print("Copy and paste the text below into your bug report.\n")
        console.print(key_values(None, ((f"- {k}", v) for k, v in info.items())))

    emit(fmt, info, human, quiet=None)


data_app = typer.Typer(help="Datasets mltk can read.", no_args_is_help=True, rich_markup_mode=None)


@data_app.command("ls")
def data_ls(data_dir: Path = typer.Option(None, "--data-dir", help="[default: $MLTK_DATA]"),
            fmt: str = FormatOption) -> None:
    """List datasets, the files each expects and whether they were found."""
    check_format(fmt)
    rows = describe_datasets(data_dir)

    def human(console):
        console.print(table(f"datasets (looked in {data_dir or data_root()})",
                            ("name", "found", "splits", "shape", "classes", "description"),
                            [(r["name"], "yes" if r.get("found") else "no", ", ".join(r.get("splits", [])),
                              "x".join(map(str, r["image_shape"])) if r.get("image_shape") else None,
                              r.get("num_classes"), r.get("description")) for r in rows]))

    emit(fmt, rows, human, quiet=[r["name"] for r in rows if r.get("found")])
