"""The full-precision model ``mltk quantize`` starts from: a registry artifact or a file.

* A registry reference, an exported artifact folder or an mltk
  ``.safetensors`` file: the architecture and the data it was trained on come
  from its card.
* A foreign ``.pt``/``.pth`` state_dict (torchvision MobileNetV2/V3, or an
  mltk model's own state_dict) or a ``.safetensors`` without mltk metadata:
  read with ``torch.load(weights_only=True)`` only; the architecture is
  inferred from the keys (or named with ``--arch``); ``--data`` is required.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mltk.core.errors import ArtifactError, UsageError
from mltk.core.registry import Registry
from mltk.core.tensor_files import (
    load_foreign_state_dict,
    load_safetensors,
    read_safetensors_metadata,
    safetensors_bytes,
)
from mltk.engines.quantize.config import SourceSpec
from mltk.nn import ImageClassifier, build_model
from mltk.nn.artifacts import WEIGHTS_FILE, load_classifier, looks_like_path
from mltk.nn.classifiers.infer_arch import infer_architecture, strip_prefix

FOREIGN_SUFFIXES = (".pt", ".pth", ".th", ".bin", ".ckpt")
QUANTIZED_KINDS = ("binarized-classifier", "quantized-classifier")


@dataclasses.dataclass
class SourceModel:
    model: ImageClassifier  # float, eval mode; images [B, C, H, W] in [0, 1] -> logits
    parent: str  # lineage parent: name:version, or file:<name>
    task: dict  # {"data": DataSpec fields, "class_names": [...]}; empty for a foreign file
    fp_bytes: int  # bytes of the full-precision weights as mltk stores them (model.safetensors)


def is_foreign_file(ref: str) -> bool:
    path = Path(ref).expanduser()
    if path.suffix in FOREIGN_SUFFIXES:
        return True
    return path.suffix == ".safetensors" and path.is_file() and "arch" not in read_safetensors_metadata(path)


def load_source(spec: SourceSpec, *, image_shape: tuple[int, int, int] | None = None,
                tensors: dict | None = None) -> SourceModel:
    """The float model ``spec.ref`` names. ``image_shape`` (C, H, W) is needed only for foreign files, whose
    ``tensors`` may have been read already (:func:`read_foreign_weights`)."""
    if is_foreign_file(spec.ref):
        if image_shape is None:
            raise UsageError(f"{spec.ref}: a bare state_dict records no dataset",
                             hint="pass --data NAME (the data it was trained on) so the input size is known")
        return _load_foreign(spec, image_shape, tensors if tensors is not None else read_foreign_weights(spec))
    if spec.arch != "auto":
        raise UsageError(f"--arch {spec.arch}: {spec.ref} is an mltk artifact whose card names its architecture",
                         hint="leave --arch out (it is for bare .pt/.safetensors state_dicts)")
    loaded = load_classifier(spec.ref)
    kind = loaded.card.get("kind")
    if kind in QUANTIZED_KINDS:
        parent = (loaded.card.get("lineage") or {}).get("parent")
        raise UsageError(f"{loaded.source} is already quantized ({kind})",
                         hint=f"quantize its full-precision parent {parent} instead" if parent else None)
    if not isinstance(loaded.model, ImageClassifier):
        raise ArtifactError(f"{loaded.source}: not a float image classifier")
    return SourceModel(loaded.model.eval(), loaded.source, loaded.task, _fp_bytes(spec.ref, loaded))


def _fp_bytes(ref: str, loaded) -> int:
    if not looks_like_path(ref):
        return Registry().resolve(loaded.source).file(WEIGHTS_FILE, verify=False).stat().st_size
    path = Path(ref).expanduser()
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    return weights.stat().st_size


def read_foreign_weights(spec: SourceSpec) -> dict:
    """The tensors of a foreign file, or an ArtifactError: read before any data, so that a refused file
    (a whole pickled model) says so at once rather than after a dataset has loaded."""
    path = Path(spec.ref).expanduser()
    if path.suffix == ".safetensors":
        return load_safetensors(path)[0]
    try:
        return load_foreign_state_dict(path)
    except ArtifactError as exc:
        if "pickled Python objects" not in exc.message:
            raise
        raise ArtifactError(
            f"{path}: refused: it holds pickled Python objects (a whole model saved with torch.save(model)?), "
            "not a plain state_dict",
            hint="save the weights instead: torch.save(model.state_dict(), 'model.pt'), then quantize that "
                 "file") from None


def _load_foreign(spec: SourceSpec, image_shape: tuple[int, int, int], tensors: dict) -> SourceModel:
    path = Path(spec.ref).expanduser()
    channels, size, _ = image_shape
    found = infer_architecture(tensors, image_size=size, arch=spec.arch, options=spec.options, where=str(path))
    if found.in_channels != channels:
        raise UsageError(f"{path}: the model takes {found.in_channels}-channel images, the data has {channels}",
                         hint="pass the --data the model was trained on")
    model = build_model(found.arch, num_classes=found.num_classes, in_channels=found.in_channels,
                        image_size=size, mean=spec.mean, std=spec.std, **found.options)
    model.net.load_state_dict(strip_prefix(tensors), strict=False)
    model.eval()
    fp_bytes = len(safetensors_bytes(model.state_dict()))
    return SourceModel(model, f"file:{path.name}", {}, fp_bytes)
