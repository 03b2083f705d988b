"""``mltk quantize <model> --bits 1 [--act-bits N] [--method bitat|xnor|reactnet] [key=value ...]``."""

from __future__ import annotations

from pathlib import Path

import typer

from mltk.cli.data_options import DataDirOption, DownloadOption, data_overrides
from mltk.cli.launching import relaunch_if_asked, with_launch_options
from mltk.cli.render import FormatOption, emit, format_value, key_values, reporter_for, run_rows
from mltk.core import distributed
from mltk.core.catalog import get_recipe
from mltk.core.paths import runs_root
from mltk.core.registry import Registry
from mltk.core.run_recipe import run_recipe
from mltk.engines.quantize import RECIPE_NAME, quantize_presets, resolve_config


@with_launch_options
def quantize(
    model: str = typer.Argument(..., help="registry reference (name, name:3, name@best), an exported folder, "
                                          "or a file: .pt/.pth state_dict, .safetensors"),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE]...",
                                          help="config overrides: train.epochs=5 bitat.transform=learned kd.weight=0"),
    bits: int = typer.Option(None, "--bits", help="weight bits: 1 (binary, the default), 2, 4 or 8"),
    act_bits: int = typer.Option(None, "--act-bits",
                                 help="input bits of quantized layers: 1 (default at --bits 1), 2, 4, 8 or 32 "
                                      "(float, default at 2/4/8 bits)"),
    method: str = typer.Option(None, "--method",
                               help="bitat (default at 1 bit), xnor or reactnet; 2/4/8 bits are uniform"),
    data: str = typer.Option(None, "--data", help="calibration and training data (default: the model's own; "
                                                  "required for a bare state_dict)"),
    data_dir: str = DataDirOption,
    download: bool = DownloadOption,
    arch: str = typer.Option(None, "--arch", help="architecture of a bare state_dict (default: inferred from its "
                                                  "keys)"),
    name: str = typer.Option(None, "--name", help="artifact name (default: MODEL-wBITSaACTBITS-METHOD)"),
    preset: str = typer.Option(None, "--preset", "-p",
                               help=f"training budget preset: {', '.join(quantize_presets())} (default: the one sized "
                                    "for the data, else digits)"),
    config_file: Path = typer.Option(None, "--config", "-c", help="YAML file over the preset"),
    resume: str = typer.Option(None, "--resume",
                               help="auto (same config, unfinished), last (newest run), or a run/ckpt folder"),
    runs_dir: Path = typer.Option(None, "--runs-dir", help="where run folders go (default: $MLTK_RUNS or ./runs)"),
    fmt: str = FormatOption,
    launch: distributed.LaunchOptions = None,
) -> None:
    """Quantize a classifier (1-bit BiTAT by default) and store it, packed, in the registry.

    First and last layers stay full precision. `mltk eval REF` then runs the
    deployed network (sign activations, unpacked binary weights).
    """
    reporter = reporter_for(fmt)
    flags = [f"model.ref={_quoted(model)}"]
    for key, value in (("quant.bits", bits), ("quant.act_bits", act_bits)):
        if value is not None:
            flags.append(f"{key}={value}")
    for key, value in (("quant.method", method), ("data.name", data), ("model.arch", arch), ("name", name)):
        if value is not None:
            flags.append(f"{key}={_quoted(value)}")
    flags += data_overrides(data_dir, download)
    # Resolve before anything starts, so a bad key fails fast, on one process.
    cfg = resolve_config(preset=preset, config_file=config_file, overrides=[*flags, *(overrides or [])])
    relaunch_if_asked(launch)
    results = run_recipe(get_recipe(RECIPE_NAME), cfg, resume=resume, runs_root=runs_dir or runs_root(),
                         registry=Registry(), reporter=reporter)
    if results["artifact"] is None:  # not the main rank
        return

    def human(console):
        metrics = results["metrics"]
        rows = [(key.replace("_", " "), value) for key, value in metrics.items()]
        rows += run_rows(results)
        console.print(key_values(f"mltk quantize {model}", ((k, format_value(v)) for k, v in rows)))

    emit(fmt, results, human, quiet=results["artifact"])


def _quoted(text: str) -> str:
    """``text`` as a YAML string, so that a name like ``123`` or ``null`` stays a string."""
    return "'" + text.replace("'", "''") + "'"
