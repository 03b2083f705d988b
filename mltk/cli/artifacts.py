"""Registry commands: ``ls``, ``show``, ``verify``, ``rm``, ``export``, ``import``, ``alias``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mltk.cli.render import (
    FormatOption,
    check_format,
    emit,
    human_bytes,
    key_values,
    reporter_for,
    table,
)
from mltk.core.config import parse_overrides
from mltk.core.errors import ArtifactError, UsageError
from mltk.core.registry import Registry
from mltk.core.tensor_files import read_safetensors_metadata
from mltk.nn.artifacts import load_classifier, looks_like_path
from mltk.nn.importing import import_weights


def ls(name: str = typer.Argument(None, help="only this artifact's versions"), fmt: str = FormatOption) -> None:
    """List artifacts in the registry."""
    check_format(fmt)
    records = Registry().list(name)
    if name and not records:
        Registry().resolve(name)  # raises the not-found error with a suggestion

    def human(console):
        rows = [(r.ref, ", ".join(r.aliases), r.kind, r.engine, r.relation, r.parent,
                 f"{r.metric_name} {r.metric_value:.4f}" if r.metric_value is not None else None,
                 r.created.replace("T", " ")[:19]) for r in records]
        if not rows:
            console.print("no artifacts yet: train one with `mltk train supervised`")
            return
        console.print(table(None, ("artifact", "aliases", "kind", "engine", "relation", "parent", "metric",
                                   "created"), rows))

    emit(fmt, [r.to_dict() for r in records], human, quiet=[r.ref for r in records])


def show(ref: str = typer.Argument(..., help="artifact reference or a .safetensors file"),
         fmt: str = FormatOption) -> None:
    """Show an artifact's card: architecture, metrics, lineage, files."""
    check_format(fmt)
    if looks_like_path(ref) and Path(ref).suffix == ".safetensors":
        metadata = read_safetensors_metadata(Path(ref))
        decoded = {k: _maybe_json(v) for k, v in metadata.items()}
        emit(fmt, {"path": ref, "metadata": decoded},
             lambda c: c.print(key_values(ref, decoded.items())), quiet=None)
        return
    record = Registry().resolve(ref)
    card = record.card()

    def human(console):
        arch = card.get("arch") or {}
        rows = [("artifact", record.ref), ("aliases", ", ".join(record.aliases) or None),
                ("kind", card.get("kind")), ("engine", card.get("engine")),
                ("architecture", arch.get("arch")), ("parameters", card.get("parameters")),
                ("parent", (card.get("lineage") or {}).get("parent")),
                ("relation", (card.get("lineage") or {}).get("relation")),
                ("created", card.get("created")), ("mltk", card.get("mltk_version")), ("path", record.path)]
        rows += [(f"metric {k}", v) for k, v in (card.get("metrics") or {}).items()]
        rows += [(f"file {k}", f"{human_bytes(v['bytes'])}  sha256 {v['sha256'][:16]}")
                 for k, v in card.get("files", {}).items()]
        console.print(key_values(None, rows))

    emit(fmt, {"record": record.to_dict(), "card": card}, human, quiet=record.ref)


def verify(ref: str = typer.Argument(...), fmt: str = FormatOption) -> None:
    """Recheck an artifact's files against their sha256; exit 3 on any mismatch."""
    check_format(fmt)
    report = Registry().verify(ref)
    data = {"ref": report.ref, "ok": report.ok, "problems": report.problems, "checked": report.checked}

    def human(console):
        if report.ok:
            console.print(f"{report.ref}: ok ({len(report.checked)} files checked)")
        else:
            for problem in report.problems:
                console.print(f"{report.ref}: {problem}")

    emit(fmt, data, human, quiet=report.ref if report.ok else None)
    if not report.ok:
        raise ArtifactError(f"{report.ref}: failed verification ({len(report.problems)} problem"
                            f"{'s' if len(report.problems) != 1 else ''})",
                            hint=f"re-create the artifact, or remove it with `mltk rm {report.ref}`")


def rm(ref: str = typer.Argument(..., help="name:VERSION, name@ALIAS, or a name (with --all for every version)"),
       all_versions: bool = typer.Option(False, "--all", help="remove every version of a name"),
       fmt: str = FormatOption) -> None:
    """Remove artifact versions from the registry."""
    check_format(fmt)
    removed = Registry().remove(ref, all_versions=all_versions)
    emit(fmt, {"removed": [r.ref for r in removed]},
         lambda c: c.print("removed " + ", ".join(r.ref for r in removed)), quiet=[r.ref for r in removed])


def export(ref: str = typer.Argument(...),
           out: Path = typer.Option(..., "--out", "-o", help="folder to write model.safetensors and card.json to"),
           overwrite: bool = typer.Option(False, "--overwrite", help="replace files already in the folder"),
           export_format: str = typer.Option("copy", "--format",
                                             help="copy (the artifact's files), or torchscript or pt2 "
                                                  "(torch.export): the network as mltk runs it, loadable "
                                                  "without mltk")) -> None:
    """Copy a verified artifact out of the registry, or export its network (prints the files written).

    Other mltk commands accept a copied folder as a reference.
    """
    if export_format != "copy":
        from mltk import load_engines
        from mltk.nn.classifiers.export import export_classifier

        load_engines()  # the engines register the classifier kinds they store (a binarized network, say)
        print(export_classifier(load_classifier(ref), out, fmt=export_format, overwrite=overwrite))
        return
    for path in Registry().export(ref, out, overwrite=overwrite):
        print(path)


def import_(
    file: Path = typer.Argument(..., help="a PyTorch state_dict (.pt/.pth/.th), a .safetensors file, "
                                          "or a TFLite MobileNetV2 (.tflite)"),
    arch: str = typer.Option(..., "--arch", help="architecture of the weights (see `mltk recipes`)"),
    options: list[str] = typer.Argument(None, metavar="[OPTION=VALUE]...", help="architecture options: width=64"),
    name: str = typer.Option(None, "--name", help="artifact name [default: the file name]"),
    data: str = typer.Option(None, "--data", help="dataset the model classifies: sets classes, shape, eval default"),
    num_classes: int = typer.Option(None, "--num-classes"),
    in_channels: int = typer.Option(None, "--in-channels"),
    image_size: int = typer.Option(None, "--image-size"),
    mean: str = typer.Option(None, "--mean", help="input normalisation mean per channel: 0.485,0.456,0.406"),
    std: str = typer.Option(None, "--std", help="input normalisation std per channel"),
    fmt: str = FormatOption,
) -> None:
    """Bring foreign weights into the registry (read with torch.load(weights_only=True) only).

    A .tflite MobileNetV2 (uint8/int8 quantized or float; --arch mobilenet_v2)
    gives its own image size, classes (1001, "background" first, for TF-slim
    ImageNet files), normalisation and, from a label file beside it, class
    names: --data and --num-classes are not needed. The stored network pads
    as torchvision does, not as TF's SAME, which changes some predictions
    (benchmarks/results/tflite_import.md). Needs the tflite extra of mltk.
    """
    reporter = reporter_for(fmt)
    record = import_weights(file, arch=arch, data=data, num_classes=num_classes, in_channels=in_channels,
                            image_size=image_size, mean=_floats(mean, "--mean"), std=_floats(std, "--std"),
                            options=parse_overrides(list(options or [])), name=name)
    reporter.info(f"imported {file} as {record.ref} ({record.card()['parameters']} parameters)")
    emit(fmt, record.to_dict(), lambda c: c.print(record.ref), quiet=record.ref)


def alias(ref: str = typer.Argument(...), alias_name: str = typer.Argument(..., metavar="ALIAS"),
          fmt: str = FormatOption) -> None:
    """Point name@ALIAS at a version (best and latest are kept up to date by mltk)."""
    check_format(fmt)
    record = Registry().set_alias(ref, alias_name)
    emit(fmt, record.to_dict(), lambda c: c.print(f"{record.name}@{alias_name} -> {record.ref}"),
         quiet=record.ref)


def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected numbers separated by commas") from None


def _maybe_json(value: str):
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value
