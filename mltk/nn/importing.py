"""Foreign classifier weights into the registry (what ``mltk import`` runs).

A plain PyTorch state_dict (``.pt``/``.pth``/``.th``, read with
``torch.load(weights_only=True)`` only) or a ``.safetensors`` file holds no
architecture and no task: the caller names the architecture, and the task
(classes, channels, image size) comes from a dataset name, from explicit
numbers, or from both (explicit numbers win)::

    from mltk.nn.importing import import_weights

    record = import_weights("resnet20-12fca82f.th", arch="resnet20", data="cifar10",
                            mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    record.ref   # "resnet20-12fca82f:1"; load_classifier(record.ref) rebuilds it
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mltk.core.errors import UsageError
from mltk.core.registry import ArtifactRecord, Registry
from mltk.data import dataset_info
from mltk.nn.artifacts import classifier_artifact, import_classifier


@dataclasses.dataclass(frozen=True)
class ImageTask:
    """What a classifier's input and output look like: images [B, in_channels, image_size, image_size] -> logits."""

    num_classes: int
    in_channels: int
    image_size: int
    class_names: list[str]


def resolve_task(data: str | None = None, *, num_classes: int | None = None, in_channels: int | None = None,
                 image_size: int | None = None, class_names: list[str] | None = None) -> ImageTask:
    """The task given by dataset ``data`` with any explicit number in its place; UsageError if one stays unknown."""
    if data:
        info = dataset_info(data)
        if info.image_shape is None or info.num_classes is None:
            if None in (num_classes, in_channels, image_size):
                raise UsageError(f"--data {data!r}: shape not known for this dataset (its files decide it)",
                                 hint="pass --num-classes, --in-channels and --image-size")
        else:
            channels, height, _ = info.image_shape
            num_classes = num_classes or info.num_classes
            in_channels = in_channels or channels
            image_size = image_size or height
            class_names = class_names or (list(info.class_names) if info.class_names else None)
    missing = [flag for flag, value in (("--num-classes", num_classes), ("--in-channels", in_channels),
                                        ("--image-size", image_size)) if value is None]
    if missing:
        raise UsageError(f"import needs {', '.join(missing)}",
                         hint="pass them, or --data NAME to take them from a dataset")
    if class_names is not None and len(class_names) != num_classes:
        raise UsageError(f"{len(class_names)} class names for {num_classes} classes",
                         hint="give one name per class, or none")
    return ImageTask(num_classes, in_channels, image_size, class_names or [str(i) for i in range(num_classes)])


def import_weights(file: str | Path, *, arch: str, data: str | None = None, num_classes: int | None = None,
                   in_channels: int | None = None, image_size: int | None = None,
                   mean: list[float] | None = None, std: list[float] | None = None, options: dict | None = None,
                   class_names: list[str] | None = None, name: str | None = None,
                   registry: Registry | None = None) -> ArtifactRecord:
    """Store the weights of ``file`` as a classifier artifact built as ``arch``; its registry record.

    ``options`` are the architecture's own (``{"width": 64}``); ``mean``/``std``
    the input normalisation per channel (None: 0.5). The artifact's lineage
    parent is ``file:<file name>`` and its name defaults to the file's stem.
    Raises UsageError for a missing or inconsistent task and ArtifactError when
    the file is refused (pickled objects) or its weights do not fit ``arch``.
    """
    file = Path(file)
    task = resolve_task(data, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                        class_names=class_names)
    model = import_classifier(file, arch=arch, num_classes=task.num_classes, in_channels=task.in_channels,
                              image_size=task.image_size, mean=mean, std=std, options=dict(options or {}))
    files, card = classifier_artifact(
        model, engine="import", data={"name": data} if data else {}, class_names=task.class_names,
        config={"source": str(file)}, config_sha256="", metrics={}, primary_metric="test_accuracy",
        parent=f"file:{file.name}", relation="imported")
    return (registry or Registry()).save(name or file.stem.replace(" ", "-"), files=files, card=card)
