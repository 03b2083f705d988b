"""Classifiers as artifacts: what is stored, and how a model is rebuilt from it.

A classifier artifact is ``model.safetensors`` (weights, plus small provenance
in its ``__metadata__``: mltk version, engine, architecture spec, task, config
hash, parent) and a card giving the same spec and task in full. Loading never
unpickles anything: the architecture is rebuilt from the spec, then the
weights are loaded strictly. Sizes in a card are not trusted: the architecture
is first assembled on the ``meta`` device (shapes, no memory) and compared
with the shapes in the weights file's header; only a model that fits them is
built for real, so its memory is bounded by the file's own size.

A reference is a registry reference (``name``, ``name:3``, ``name@best``), an
exported artifact folder (``card.json`` beside ``model.safetensors``), or a
``.safetensors`` file written by mltk. A foreign ``.pt`` has no architecture
in it: it enters through :func:`import_classifier` with the architecture named.

Other kinds of classifier artifact (a binarized network, say) register a
loader for their card ``kind`` with :func:`register_classifier_kind`; every
command that takes a classifier then takes them too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mltk.core.artifact import (
    FOREIGN_SUFFIXES,
    WEIGHTS_FILE,
    build_card,
    names_a_path,
    open_artifact,
    provenance,
)
from mltk.core.errors import ArtifactError, ConfigError, UsageError
from mltk.core.registry import Registry
from mltk.core.tensor_files import (
    TensorLayout,
    load_foreign_state_dict,
    load_safetensors,
    read_tensor_layouts,
    safetensors_bytes,
    tensor_layout,
)
from mltk.nn.classifiers.architectures import UnknownArchError, build_from_spec, build_model
from mltk.nn.classifiers.classifier import ImageClassifier


@dataclasses.dataclass
class LoadedClassifier:
    model: torch.nn.Module  # images float [B, C, H, W] in [0, 1] -> logits [B, num_classes]
    source: str  # the registry reference (name:version) or the file it came from
    task: dict  # {"data": DataSpec fields, "class_names": [...]}
    card: dict

    @property
    def arch_args(self) -> dict:
        """num_classes, in_channels, image_size and the architecture's options."""
        return self.card["arch"]["args"]


# A loader turns a verified card into a model; ``read`` gives the path of one
# of the artifact's files after checking its sha256; ``where`` names it in errors.
ClassifierLoader = Callable[[dict, Callable[[str], Path], str], torch.nn.Module]
_LOADERS: dict[str, ClassifierLoader] = {}


def register_classifier_kind(kind: str, loader: ClassifierLoader) -> None:
    """Let every classifier command load artifacts whose card says ``kind``."""
    _LOADERS[kind] = loader


# ---------------------------------------------------------------- writing


def classifier_artifact(model: ImageClassifier, *, engine: str, data: Any, class_names: list[str],
                        config: dict, config_sha256: str, metrics: dict, primary_metric: str,
                        parent: str, relation: str, extra: dict | None = None) -> tuple[dict, dict]:
    """(files, card) for :meth:`Registry.save`: the weights with provenance, and the card."""
    task = {"data": dataclasses.asdict(data) if dataclasses.is_dataclass(data) else dict(data),
            "class_names": list(class_names)}
    spec = model.spec
    metadata = provenance(engine=engine, parent=parent, relation=relation, arch=spec, task=task,
                          config_sha256=config_sha256, format="pt")
    files = {WEIGHTS_FILE: safetensors_bytes(model.state_dict(), metadata)}
    card = build_card(kind="classifier", engine=engine, arch=spec, task=task,
                      parameters=sum(p.numel() for p in model.parameters()), metrics=metrics,
                      primary_metric=primary_metric, parent=parent, relation=relation, config=config,
                      config_sha256=config_sha256, **(extra or {}))
    return files, card


# ---------------------------------------------------------------- reading


def looks_like_path(ref: str) -> bool:
    return names_a_path(ref)


def load_classifier(ref: str, registry: Registry | None = None) -> LoadedClassifier:
    """The classifier ``ref`` names, with its task description; ArtifactError if it cannot be."""
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix in FOREIGN_SUFFIXES:
        raise UsageError(f"{path}: a plain PyTorch checkpoint carries no architecture",
                         hint=f"import it first: mltk import {path} --arch NAME (see `mltk import --help`)")
    opened = open_artifact(ref, registry=registry, lone_files=True)
    card = opened.card
    if opened.lone_file:
        if "arch" not in card:
            raise ArtifactError(f"{path}: safetensors file without an mltk architecture in its metadata",
                                hint=f"import it with an architecture: mltk import {path} --arch NAME")
        card = {"kind": "classifier", **card}  # a plain classifier's weights name no kind
    model = _loader_for(card, opened.source)(card, opened.file, opened.source)
    return LoadedClassifier(model, opened.source, card.get("task", {}), card)


def _loader_for(card: dict, where: str) -> ClassifierLoader:
    kind = card.get("kind")
    if kind not in _LOADERS or "arch" not in card:
        raise ArtifactError(f"{where}: is a {kind or 'unknown'!r} artifact, not a classifier",
                            hint=f"classifier kinds: {', '.join(sorted(_LOADERS))}")
    return _LOADERS[kind]


def _load_plain(card: dict, read: Callable[[str], Path], where: str) -> ImageClassifier:
    return _rebuild(card["arch"], read(WEIGHTS_FILE), where)


register_classifier_kind("classifier", _load_plain)


def network_from_card(spec: dict, where: str) -> ImageClassifier:
    """The untrained network a card's ``arch`` spec describes; ArtifactError naming ``where`` if it cannot be."""
    try:
        return build_from_spec(spec)
    except UnknownArchError as exc:
        raise ArtifactError(f"{where}: the card names an unknown architecture: {exc.message}",
                            hint="upgrade mltk, or check that the card was not edited") from None
    except ConfigError as exc:
        raise ArtifactError(f"{where}: the card's architecture spec is invalid: {exc.message}") from None


def _rebuild(spec: dict, weights: Path, where: str) -> ImageClassifier:
    arch = spec.get("arch") if isinstance(spec, dict) else None
    return build_for_weights(lambda: network_from_card(spec, where), weights, where,
                             fits=f"the architecture {arch!r}")


def build_for_weights(build: Callable[[], torch.nn.Module], weights: Path, where: str, *,
                      fits: str = "the architecture",
                      hint: str = "check --arch and its options (num_classes, width, ...)") -> torch.nn.Module:
    """``build()`` holding the weights of the safetensors file ``weights``, in eval mode; ArtifactError if they differ.

    ``build`` runs first on the ``meta`` device and its tensors are compared
    with the file's header, so a card that asks for a model far larger than
    its weights is refused before any memory is given to either.
    """
    with torch.device("meta"):
        skeleton = build()
    refuse_misfit({key: tensor_layout(value) for key, value in skeleton.state_dict().items()},
                  read_tensor_layouts(weights), where, fits=fits, hint=hint)
    del skeleton
    model = build()
    tensors, _ = load_safetensors(weights)
    load_weights_exactly(model, tensors, where, fits=fits, hint=hint)
    model.eval()
    return model


def load_weights_exactly(module: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str, *,
                         fits: str = "the architecture",
                         hint: str = "check --arch and its options (num_classes, width, ...)") -> None:
    """Load ``tensors`` into ``module``: every key present, none extra, every shape and kind of number equal;
    else ArtifactError (see :func:`refuse_misfit`)."""
    own = module.state_dict()
    refuse_misfit({key: tensor_layout(value) for key, value in own.items()},
                  {key: tensor_layout(value) for key, value in tensors.items()}, where, fits=fits, hint=hint)
    module.load_state_dict(tensors, strict=False)


def refuse_misfit(own: dict[str, TensorLayout], stored: dict[str, TensorLayout], where: str, *,
                  fits: str, hint: str) -> None:
    """ArtifactError unless ``stored`` has every key of ``own`` with its shape and kind of number, and no other.

    The message names ``where``, what the weights should fit (``fits``) and the
    first missing, unexpected, mis-shaped and other-kind key, with ``hint`` as
    the next step. Integers in a float parameter would load silently as
    numbers of another meaning (an export stored as int32), so kinds must match.
    """
    # Checkpoints written before PyTorch 0.4.1 have no BatchNorm step counter;
    # the counter only matters for momentum=None, and loading leaves it at 0.
    missing = sorted(k for k in set(own) - set(stored) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(stored) - set(own))
    common = sorted(set(own) & set(stored))
    wrong = [k for k in common if own[k].shape != stored[k].shape]
    other_kind = [k for k in common if own[k].kind != stored[k].kind]
    if not (missing or unexpected or wrong or other_kind):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (first: {missing[0][:120]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0][:120]})")
    if wrong:
        key = wrong[0]
        parts.append(f"{len(wrong)} of another shape (first: {key} {_shown_shape(stored[key].shape)} "
                     f"vs {_shown_shape(own[key].shape)})")
    if other_kind:
        key = other_kind[0]
        parts.append(f"{len(other_kind)} of another kind of number (first: {key} holds {stored[key].kind}, "
                     f"the model {own[key].kind})")
    raise ArtifactError(f"{where}: the weights do not fit {fits}: " + "; ".join(parts), hint=hint)


def _shown_shape(shape: tuple[int, ...]) -> str:
    text = str(tuple(shape))
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------- importing foreign weights


def import_classifier(path: Path, *, arch: str, num_classes: int, in_channels: int, image_size: int,
                      mean: list[float] | None, std: list[float] | None, options: dict) -> ImageClassifier:
    """A classifier built as ``arch`` holding the weights of a foreign checkpoint.

    The checkpoint is read with ``torch.load(weights_only=True)`` only; its keys
    may be the architecture's own (``conv1.weight``) or mltk's (``net.conv1.weight``).
    """
    tensors = load_foreign_state_dict(Path(path)) if Path(path).suffix != ".safetensors" \
        else load_safetensors(Path(path))[0]
    model = build_model(arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                        mean=mean, std=std, **options)
    if not all(key.startswith("net.") for key in tensors):
        tensors = {f"net.{key}": value for key, value in tensors.items()}
    load_weights_exactly(model, tensors, str(path), fits=f"the architecture {model.arch!r}")
    model.eval()
    return model
