"""DOTA files: label files, detection files, task-1 submissions, the folder layout.

A DOTA label file (``labelTxt/<image>.txt``) may start with header lines
``imagesource:GoogleEarth`` and ``gsd:0.146``, kept as text so they are
written back unchanged; then one object a line::

    x1 y1 x2 y2 x3 y3 x4 y4 class difficult

``difficult`` is optional (0 when absent, as in DOTA_devkit); 1 marks an
object the metric ignores, and DOTA_devkit's splitter writes 2 for an object
cut by a patch border. Like the devkit, any nonzero value is ignored by the
metric. Files may end lines with CRLF (the official ones do).

Detections are written in the same shape with a score in place of
``difficult``, and as DOTA's task-1 submission, one file per class
(``Task1_<class>.txt``, lines ``image_id score x1 y1 ... x4 y4``), which is
what the evaluation server and ``dota_evaluation_task1.py`` read.

Bad input stops with an error naming the file and line: fewer than eight
coordinates, a coordinate that is not a finite number, a class outside the
class list. A polygon of zero area is not an object anyone can detect: it is
skipped with a warning naming it, as the devkit's splitter skips it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from mltk.core.console import warn
from mltk.core.errors import ArtifactError, DataMissingError, UsageError
from mltk.engines.detect.boxes import box_to_polygon

DOTA_V1_0_CLASSES = (
    "plane", "baseball-diamond", "bridge", "ground-track-field", "small-vehicle", "large-vehicle",
    "ship", "tennis-court", "basketball-court", "storage-tank", "soccer-ball-field", "roundabout",
    "harbor", "swimming-pool", "helicopter",
)
DOTA_V1_5_CLASSES = DOTA_V1_0_CLASSES + ("container-crane",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
TASK1_PREFIX = "Task1_"


@dataclasses.dataclass(frozen=True)
class DotaLabels:
    """The objects of one image.

    ``polygons`` ``(N, 8)`` float64 as written in the file; ``labels``
    ``(N,)`` int64 indices into ``classes``; ``difficult`` ``(N,)`` int64
    (nonzero: ignored by the metric); ``header`` the header lines, in order.
    """

    polygons: torch.Tensor
    labels: torch.Tensor
    difficult: torch.Tensor
    classes: tuple[str, ...] = DOTA_V1_0_CLASSES
    header: dict[str, str] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return self.polygons.shape[0]

    def class_names(self) -> list[str]:
        return [self.classes[int(label)] for label in self.labels]


@dataclasses.dataclass(frozen=True)
class DotaDetections:
    """Detected objects of one image: ``polygons`` ``(N, 8)``, ``labels`` ``(N,)`` into ``classes``, ``scores`` ``(N,)``."""

    polygons: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    classes: tuple[str, ...] = DOTA_V1_0_CLASSES

    @classmethod
    def from_boxes(cls, boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
                   classes: tuple[str, ...] = DOTA_V1_0_CLASSES) -> DotaDetections:
        """From le90 boxes ``(N, 5)``: their four corners become the polygons."""
        return cls(box_to_polygon(boxes.detach().to(torch.float64)), labels.long(), scores.detach(), classes)

    def __len__(self) -> int:
        return self.polygons.shape[0]


@dataclasses.dataclass(frozen=True)
class DotaItem:
    """One image of a DOTA folder: its image file, its label file, or both."""

    image_id: str
    image_path: Path | None
    label_path: Path | None


# --- reading -------------------------------------------------------------------------------------

def read_label_file(path: str | Path, classes: tuple[str, ...] = DOTA_V1_0_CLASSES) -> DotaLabels:
    """Parse one DOTA label file; see the module docstring for the format and the errors."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as error:
        raise DataMissingError(f"{path}: no such label file") from error
    except UnicodeDecodeError as error:
        raise ArtifactError(f"{path}: not a text file ({error.reason} at byte {error.start})",
                            "a DOTA label file is UTF-8 text") from error
    except OSError as error:
        raise ArtifactError(f"{path}: cannot read ({error})") from error
    return parse_label_text(text, str(path), classes)


def parse_label_text(text: str, source: str, classes: tuple[str, ...] = DOTA_V1_0_CLASSES) -> DotaLabels:
    """Parse the text of a label file; ``source`` names it in errors and warnings."""
    class_index = {name: index for index, name in enumerate(classes)}
    header: dict[str, str] = {}
    polygons, labels, difficult = [], [], []
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{source}:{line_number}"
        if len(fields) == 1 and ":" in fields[0]:
            key, _, value = fields[0].partition(":")
            header[key] = value
            continue
        coordinates = _coordinates(fields, where)
        if len(fields) == 8:
            raise ArtifactError(f"{where}: 8 coordinates but no class name",
                                "each object line is: x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]")
        if len(fields) > 10:
            raise ArtifactError(f"{where}: {len(fields)} fields, at most 10 expected",
                                "each object line is: x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]")
        name = fields[8]
        if name not in class_index:
            raise ArtifactError(f"{where}: unknown class {name!r}",
                                f"the class list has {len(classes)} classes ({', '.join(classes[:3])}, ...); "
                                "DOTA v1.5 adds 'container-crane' (DOTA_V1_5_CLASSES)")
        level = _difficulty(fields[9], where) if len(fields) == 10 else 0
        if _shoelace(coordinates) == 0.0:
            warn(f"{where}: {name} has a zero-area polygon; skipped")
            continue
        polygons.append(coordinates)
        labels.append(class_index[name])
        difficult.append(level)
    return DotaLabels(
        polygons=torch.tensor(polygons, dtype=torch.float64).view(-1, 8),
        labels=torch.tensor(labels, dtype=torch.long),
        difficult=torch.tensor(difficult, dtype=torch.long),
        classes=tuple(classes),
        header=header,
    )


def _coordinates(fields: list[str], where: str) -> list[float]:
    values = []
    for field in fields[:8]:
        try:
            value = float(field)
        except ValueError:
            break
        if not math.isfinite(value):
            raise ArtifactError(f"{where}: coordinate {field!r} is not a finite number")
        values.append(value)
    if len(values) < 8:
        raise ArtifactError(f"{where}: {len(values)} coordinates before {(fields[len(values):] or ['the end'])[0]!r}, "
                            "8 expected", "each object line is: x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]")
    return values


def _shoelace(polygon: list[float]) -> float:
    xs, ys = polygon[0::2], polygon[1::2]
    return 0.5 * sum(xs[i] * ys[(i + 1) % 4] - xs[(i + 1) % 4] * ys[i] for i in range(4))


def _difficulty(field: str, where: str) -> int:
    try:
        level = int(field)
    except ValueError:
        level = -1
    if level < 0:
        raise ArtifactError(f"{where}: difficult flag {field!r} is not a whole number >= 0",
                            "the tenth field is 0 (normal) or 1 (difficult)")
    return level


def list_dota_folder(path: str | Path) -> list[DotaItem]:
    """The images and label files of a DOTA folder, paired by file name, sorted by image id.

    ``path`` (a ``dota:`` prefix is allowed) holds ``images/`` and/or
    ``labelTxt/``, DOTA's layout; or, with neither, the images and ``.txt``
    label files themselves (a folder of label files alone, say).
    """
    root = Path(str(path).removeprefix("dota:")).expanduser()
    if not root.is_dir():
        raise DataMissingError(f"dota: {root} is not a folder",
                               "PATH must hold images/ and labelTxt/ (DOTA's layout)")
    image_dir, label_dir = root / "images", root / "labelTxt"
    if not image_dir.is_dir() and not label_dir.is_dir():
        image_dir = label_dir = root
    images = _by_stem(image_dir, IMAGE_SUFFIXES)
    labels = _by_stem(label_dir, (".txt",))
    if not images and not labels:
        raise DataMissingError(f"dota: no images or label files in {root}",
                               "put images in PATH/images/ (.png, .jpg, ...) and labels in PATH/labelTxt/ (.txt)")
    return [DotaItem(image_id, images.get(image_id), labels.get(image_id))
            for image_id in sorted(images.keys() | labels.keys())]


def _by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for file in sorted(folder.iterdir()):
        if file.suffix.lower() not in suffixes or not file.is_file():
            continue
        if file.stem in found:
            raise ArtifactError(f"dota: {found[file.stem]} and {file} name the same image",
                                "keep one file per image name")
        found[file.stem] = file
    return found


def read_ground_truth(path: str | Path, classes: tuple[str, ...] = DOTA_V1_0_CLASSES) -> dict[str, DotaLabels]:
    """Every label file of a DOTA folder, by image id."""
    items = [item for item in list_dota_folder(path) if item.label_path is not None]
    if not items:
        raise DataMissingError(f"dota: no label files in {path}", "put the labels in PATH/labelTxt/<image>.txt")
    return {item.image_id: read_label_file(item.label_path, classes) for item in items}


def read_task1_submission(folder: str | Path, classes: tuple[str, ...] = DOTA_V1_0_CLASSES) -> dict[str, DotaDetections]:
    """Read ``Task1_<class>.txt`` files back into detections by image id."""
    folder = Path(folder)
    files = sorted(folder.glob(f"{TASK1_PREFIX}*.txt"))
    if not files:
        raise DataMissingError(f"{folder}: no {TASK1_PREFIX}<class>.txt files")
    class_index = {name: index for index, name in enumerate(classes)}
    rows: dict[str, list[tuple[list[float], int, float]]] = {}
    for file in files:
        name = file.stem.removeprefix(TASK1_PREFIX)
        if name not in class_index:
            raise ArtifactError(f"{file}: unknown class {name!r} in the file name")
        for line_number, line in enumerate(file.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 10:
                raise ArtifactError(f"{file}:{line_number}: {len(fields)} fields, 10 expected",
                                    "each line is: image_id score x1 y1 x2 y2 x3 y3 x4 y4")
            try:
                score, polygon = float(fields[1]), [float(value) for value in fields[2:]]
            except ValueError as error:
                raise ArtifactError(f"{file}:{line_number}: {error}") from error
            rows.setdefault(fields[0], []).append((polygon, class_index[name], score))
    return {
        image_id: DotaDetections(
            polygons=torch.tensor([row[0] for row in found], dtype=torch.float64),
            labels=torch.tensor([row[1] for row in found], dtype=torch.long),
            scores=torch.tensor([row[2] for row in found], dtype=torch.float64),
            classes=tuple(classes),
        )
        for image_id, found in rows.items()
    }


# --- writing -------------------------------------------------------------------------------------

def format_numbers(values: torch.Tensor) -> list[str]:
    """The shortest decimals that read back to the same values in their own dtype.

    A float32 score of 0.93 prints as ``0.93``, not ``0.9300000072``; whole
    numbers print bare (``2753``), like the official labels.
    """
    return [np.format_float_positional(value, unique=True, trim="-") for value in values.detach().cpu().numpy()]


def write_label_file(path: str | Path, labels: DotaLabels) -> Path:
    """Write ground truth: the header lines, then ``x1 ... y4 class difficult`` per object."""
    lines = [f"{key}:{value}" for key, value in labels.header.items()]
    for polygon, name, level in zip(labels.polygons, labels.class_names(), labels.difficult.tolist(), strict=True):
        lines.append(" ".join(format_numbers(polygon)) + f" {name} {level}")
    return _write_text(Path(path), lines)


def write_detection_file(path: str | Path, detections: DotaDetections, header: Mapping[str, str] | None = None) -> Path:
    """Write detections of one image: ``x1 ... y4 class score`` per object, highest score first."""
    lines = [f"{key}:{value}" for key, value in (header or {}).items()]
    order = torch.sort(detections.scores, descending=True, stable=True).indices
    scores = format_numbers(detections.scores)
    for index in order.tolist():
        name = detections.classes[int(detections.labels[index])]
        lines.append(" ".join(format_numbers(detections.polygons[index])) + f" {name} {scores[index]}")
    return _write_text(Path(path), lines)


def write_task1_submission(folder: str | Path, detections: Mapping[str, DotaDetections],
                           classes: tuple[str, ...] = DOTA_V1_0_CLASSES) -> list[Path]:
    """Write ``Task1_<class>.txt`` for every class (empty ones too: the devkit opens all of them).

    Each line is ``image_id score x1 y1 ... x4 y4``; returns the files written.
    """
    lines: dict[str, list[str]] = {name: [] for name in classes}
    for image_id, found in detections.items():
        if any(character.isspace() for character in image_id):
            raise UsageError(f"image id {image_id!r} contains white space, which a task-1 line cannot hold",
                             "rename the image")
        scores = format_numbers(found.scores)
        for polygon, label, score in zip(found.polygons, found.labels.tolist(), scores, strict=True):
            name = found.classes[label]
            if name not in lines:
                raise UsageError(f"{image_id}: detections of class {name!r}, which is not in the class list")
            lines[name].append(f"{image_id} {score} " + " ".join(format_numbers(polygon)))
    return [_write_text(Path(folder) / f"{TASK1_PREFIX}{name}.txt", rows) for name, rows in lines.items()]


def _write_text(path: Path, lines: Iterable[str]) -> Path:
    """Write a whole file or nothing: a temporary file beside it, renamed into place."""
    text = "".join(f"{line}\n" for line in lines)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as file:
                file.write(text)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as error:
        raise UsageError(f"cannot write {path} ({error.strerror or error})",
                         "choose an output folder you can write to") from error
    return path
