"""``detect_images``: a trained detector over image files, and the files ``mltk detect`` writes.

::

    results = detect_images("uagdet", ["scene.png", "tiles/"], score_threshold=0.3)
    write_outputs(results, "out/", classes=results.classes)

Each image is decoded, detected patch by patch (``inference.detect_image``)
and dropped before the next, so memory is one image at a time. An image
that cannot be decoded is recorded as failed and the rest still run.
Written per image: ``labelTxt/<image>.txt`` (DOTA's label format with the
score in place of ``difficult``) and ``<image>.png`` with the boxes and class
names drawn; for all images: DOTA's task-1 submission ``Task1_<class>.txt``.
"""

from __future__ import annotations

import dataclasses
import glob
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from mltk.core.device import resolve_device
from mltk.core.errors import ArtifactError, DataMissingError, UsageError
from mltk.engines.detect.artifact import latest_detector, load_detector
from mltk.engines.detect.boxes import box_to_polygon
from mltk.engines.detect.data import decode_image
from mltk.engines.detect.dota import (
    IMAGE_SUFFIXES,
    DotaDetections,
    write_detection_file,
    write_task1_submission,
)
from mltk.engines.detect.inference import ImageDetections, detect_image

LABEL_FOLDER = "labelTxt"
# One colour per class, cycled: distinguishable on aerial imagery.
PALETTE = ((255, 64, 64), (64, 255, 64), (64, 160, 255), (255, 220, 0), (255, 64, 255), (0, 255, 255),
           (255, 140, 0), (160, 100, 255))


@dataclasses.dataclass
class ImageResult:
    image_id: str
    path: Path
    detections: ImageDetections | None  # None when the image failed
    error: str | None = None
    seconds: float = 0.0


@dataclasses.dataclass
class DetectionRun:
    model: str  # the reference the detector came from
    classes: tuple[str, ...]
    images: list[ImageResult]
    patch_size: int
    overlap: int

    @property
    def failed(self) -> list[ImageResult]:
        return [result for result in self.images if result.error is not None]

    def to_dict(self) -> dict:
        """JSON-safe: every detection as class, score, polygon and le90 box."""
        def image_entry(result: ImageResult) -> dict:
            if result.detections is None:
                return {"image": result.image_id, "path": str(result.path), "error": result.error}
            found = result.detections
            polygons = box_to_polygon(found.boxes.double())
            return {"image": result.image_id, "path": str(result.path), "seconds": result.seconds,
                    "patches": found.patches, "refined_fraction": found.refined_fraction,
                    "detections": [{"class": self.classes[int(label)], "score": float(score),
                                    "polygon": [round(float(v), 2) for v in polygon],
                                    "box": [round(float(v), 4) for v in box]}
                                   for box, polygon, score, label in zip(found.boxes, polygons, found.scores,
                                                                         found.labels, strict=True)]}
        return {"model": self.model, "patch_size": self.patch_size, "overlap": self.overlap,
                "images": [image_entry(result) for result in self.images]}


def image_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Image files named by ``inputs``: files, folders (their images, sorted) and glob patterns."""
    found: list[Path] = []
    for entry in inputs:
        text = str(entry)
        path = Path(text).expanduser()
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not inside:
                raise DataMissingError(f"{path}: no images in the folder",
                                       hint=f"images end in {', '.join(IMAGE_SUFFIXES)}")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(text):
            matched = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not matched:
                raise DataMissingError(f"{text}: matches no image file")
            found.extend(matched)
        else:
            raise DataMissingError(f"{text}: no such file or folder")
    stems = [path.stem for path in found]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if repeated:
        raise UsageError(f"several inputs are named {repeated[0]!r}: their output files would collide",
                         hint="give images with distinct names")
    return found


def detect_images(model_ref: str | None, inputs: Iterable[str | Path], *, score_threshold: float = 0.3,
                  patch_size: int | None = None, overlap: int | None = None, classes: Iterable[str] | None = None,
                  device: str = "auto",
                  on_image: Callable[[int, int, ImageResult], None] | None = None) -> DetectionRun:
    """Detect objects in every image ``inputs`` names with the detector ``model_ref`` (None: the newest one,
    a ``uagdet`` one first). ``classes`` keeps only those classes; patch size and overlap default to the
    ones the detector was trained with; ``on_image(index, total, result)`` follows progress."""
    ref = model_ref or latest_detector()
    loaded = load_detector(ref)
    patch_size = patch_size or loaded.patch_size
    overlap = loaded.overlap if overlap is None else overlap
    if not 0 <= overlap < patch_size:
        raise UsageError(f"overlap {overlap} must lie in [0, patch size {patch_size})")
    keep_labels = None
    if classes is not None:
        unknown = sorted(set(classes) - set(loaded.classes))
        if unknown:
            raise UsageError(f"unknown class {unknown[0]!r}", hint=f"classes: {', '.join(loaded.classes)}")
        keep_labels = torch.tensor([loaded.classes.index(name) for name in classes])
    files = image_files(inputs)
    torch_device = resolve_device(device)
    model = loaded.model.to(torch_device)
    results = []
    for index, path in enumerate(files):
        started = time.perf_counter()
        try:
            image = decode_image(path)
        except ArtifactError as error:
            result = ImageResult(path.stem, path, None, error=error.message)
        else:
            found = detect_image(model, image, patch_size=patch_size, overlap=overlap,
                                 score_threshold=score_threshold, device=torch_device)
            if keep_labels is not None:
                wanted = torch.isin(found.labels, keep_labels)
                found = dataclasses.replace(found, boxes=found.boxes[wanted], scores=found.scores[wanted],
                                            labels=found.labels[wanted])
            result = ImageResult(path.stem, path, found, seconds=time.perf_counter() - started)
            del image
        results.append(result)
        if on_image is not None:
            on_image(index, len(files), result)
    return DetectionRun(loaded.source, loaded.classes, results, patch_size, overlap)


def output_folder(out_dir: str | Path) -> Path:
    """``out_dir``, created, or a UsageError before any image is detected when it cannot be written."""
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".mltk-write-check"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write to {out} ({error.strerror or error})",
                         hint="choose an output folder you can write to") from None
    return out


def write_outputs(run: DetectionRun, out_dir: str | Path, *, draw: bool = True) -> list[Path]:
    """Write ``labelTxt/<image>.txt``, ``Task1_<class>.txt`` and (``draw``) ``<image>.png``; the files written."""
    out = output_folder(out_dir)
    written, submission = [], {}
    for result in run.images:
        if result.detections is None:
            continue
        found = result.detections
        detections = DotaDetections.from_boxes(found.boxes, found.labels, found.scores, run.classes)
        submission[result.image_id] = detections
        written.append(write_detection_file(out / LABEL_FOLDER / f"{result.image_id}.txt", detections))
        if draw:
            written.append(draw_detections(result.path, detections, out / f"{result.image_id}.png"))
    written.extend(write_task1_submission(out, submission, run.classes))
    return written


def draw_detections(image_path: Path, detections: DotaDetections, target: Path) -> Path:
    """The image with each detection's polygon and ``class score`` drawn, saved as PNG at ``target``."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # as decode_image: DOTA images are large
    try:
        with Image.open(image_path) as opened:
            picture = opened.convert("RGB")
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    pen = ImageDraw.Draw(picture)
    for polygon, label, score in zip(detections.polygons.tolist(), detections.labels.tolist(),
                                     detections.scores.tolist(), strict=True):
        colour = PALETTE[label % len(PALETTE)]
        corners = list(zip(polygon[0::2], polygon[1::2], strict=True))
        pen.polygon(corners, outline=colour, width=2)
        pen.text(corners[0], f"{detections.classes[label]} {score:.2f}", fill=colour)
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        picture.save(temporary, format="PNG")
        temporary.replace(target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise UsageError(f"cannot write {target} ({error.strerror or error})",
                         hint="choose an output folder you can write to") from None
    return target
