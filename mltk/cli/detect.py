"""``mltk detect INPUT... [--model REF] -o DIR``: oriented objects in aerial images, as DOTA files and pictures."""

from __future__ import annotations

from pathlib import Path

import typer

from mltk.cli.render import FormatOption, emit, reporter_for, table
from mltk.core.errors import ArtifactError
from mltk.engines.detect.api import detect_images, output_folder, write_outputs


def detect(
    inputs: list[str] = typer.Argument(..., metavar="INPUT...", help="images, folders of images, or glob patterns"),
    out_dir: Path = typer.Option(..., "--out", "-o", help="where labelTxt/, Task1_<class>.txt and the pictures go"),
    model: str = typer.Option(None, "--model", "-m",
                              help="detector: registry reference or exported folder [default: the newest "
                                   "uagdet artifact, else the newest detector]"),
    score_threshold: float = typer.Option(0.3, "--score-threshold", help="keep detections scoring above this"),
    patch_size: int = typer.Option(None, "--patch-size", help="patch side in pixels [default: the model's]"),
    overlap: int = typer.Option(None, "--overlap", help="patch overlap in pixels [default: the model's]"),
    classes: str = typer.Option(None, "--classes", help="comma-separated class names to keep [default: all]"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps"),
    fmt: str = FormatOption,
) -> None:
    """Detect oriented objects; write DOTA label files with scores, task-1 files and pictures.

    Large images are cut into overlapping patches and merged with rotated NMS.
    An image that cannot be decoded is reported and skipped; the others are
    still written, and the exit code is then 3.
    """
    reporter = reporter_for(fmt)

    def progress(index: int, total: int, result) -> None:
        if result.error is not None:
            reporter.warn(f"[{index + 1}/{total}] {result.path}: {result.error}")
        else:
            reporter.info(f"[{index + 1}/{total}] {result.path}: {len(result.detections)} objects "
                          f"in {result.seconds:.1f} s")

    output_folder(out_dir)  # an unwritable folder fails before any image is detected
    wanted = [name.strip() for name in classes.split(",") if name.strip()] if classes else None
    run = detect_images(model, inputs, score_threshold=score_threshold, patch_size=patch_size, overlap=overlap,
                        classes=wanted, device=device, on_image=progress)
    write_outputs(run, out_dir)
    document = {**run.to_dict(), "out_dir": str(out_dir)}

    def human(console):
        rows = [(r.image_id, "failed" if r.detections is None else len(r.detections),
                 r.error or f"{r.seconds:.1f} s") for r in run.images]
        console.print(table(f"mltk detect ({run.model}) -> {out_dir}", ["image", "objects", "time"], rows))

    emit(fmt, document, human, quiet=str(out_dir))
    if run.failed:
        raise ArtifactError(f"{len(run.failed)} of {len(run.images)} images could not be decoded "
                            f"(first: {run.failed[0].path})", hint="the others were written; replace the files")
