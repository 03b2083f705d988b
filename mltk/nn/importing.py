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

A TFLite MobileNetV2 (``.tflite``, quantized or float) carries its own task:
the image size and channels of its input tensor, the classes of its output
(1001 for TF-slim's ImageNet files, "background" first), the normalisation of
its input quantisation, and the class names of a label file beside it
(``mltk.nn.classifiers.tflite_mobilenet`` reads it; ``pip install "mltk[tflite]"``)::

    import_weights("mobilenet_v2_1.0_224_quant.tflite", arch="mobilenet_v2")
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mltk.core.errors import UsageError
from mltk.core.registry import ArtifactRecord, Registry
from mltk.data import dataset_info
from mltk.nn.artifacts import classifier_artifact, import_classifier
from mltk.nn.classifiers.tflite_mobilenet import ARCH as TFLITE_ARCH
from mltk.nn.classifiers.tflite_mobilenet import mobilenet_v2_from_tflite


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
    A ``.tflite`` file gives its own task and normalisation (``mean``/``std``
    still replace the latter); numbers given that contradict it are a UsageError.
    """
    file = Path(file)
    if file.suffix == ".tflite":
        return _import_tflite(file, arch=arch, data=data, num_classes=num_classes, in_channels=in_channels,
                              image_size=image_size, mean=mean, std=std, options=options,
                              class_names=class_names, name=name, registry=registry)
    task = resolve_task(data, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                        class_names=class_names)
    model = import_classifier(file, arch=arch, num_classes=task.num_classes, in_channels=task.in_channels,
                              image_size=task.image_size, mean=mean, std=std, options=dict(options or {}))
    files, card = classifier_artifact(
        model, engine="import", data={"name": data} if data else {}, class_names=task.class_names,
        config={"source": str(file)}, config_sha256="", metrics={}, primary_metric="test_accuracy",
        parent=f"file:{file.name}", relation="imported")
    return (registry or Registry()).save(name or file.stem.replace(" ", "-"), files=files, card=card)


def _import_tflite(file: Path, *, arch: str, data: str | None, num_classes: int | None, in_channels: int | None,
                   image_size: int | None, mean: list[float] | None, std: list[float] | None,
                   options: dict | None, class_names: list[str] | None, name: str | None,
                   registry: Registry | None) -> ArtifactRecord:
    if arch != TFLITE_ARCH:
        raise UsageError(f"{file.name}: mltk imports TFLite files as {TFLITE_ARCH} only, not {arch!r}",
                         hint=f"pass --arch {TFLITE_ARCH}")
    imported = mobilenet_v2_from_tflite(file, options=dict(options or {}), mean=mean, std=std)
    model = imported.model
    given = {"--num-classes": num_classes, "--in-channels": in_channels, "--image-size": image_size}
    actual = {"--num-classes": model.args["num_classes"], "--in-channels": model.args["in_channels"],
              "--image-size": model.args["image_size"]}
    conflicts = [f"{flag} {value} but the file has {actual[flag]}" for flag, value in given.items()
                 if value is not None and value != actual[flag]]
    if conflicts:
        raise UsageError(f"{file.name}: " + "; ".join(conflicts),
                         hint="leave them out: a .tflite file gives its own shape and classes")
    task = resolve_task(data, num_classes=actual["--num-classes"], in_channels=actual["--in-channels"],
                        image_size=actual["--image-size"], class_names=class_names or imported.class_names)
    files, card = classifier_artifact(
        model, engine="import", data={"name": data} if data else {}, class_names=task.class_names,
        config={"source": str(file), "format": "tflite", "input_type": imported.input_type},
        config_sha256="", metrics={}, primary_metric="test_accuracy", parent=f"file:{file.name}",
        relation="imported")
    return (registry or Registry()).save(name or file.stem.replace(" ", "-"), files=files, card=card)
