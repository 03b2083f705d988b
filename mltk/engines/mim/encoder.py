"""Encoder artifacts: what the MIM recipes store, and how evaluation and ``sdft`` load them.

An encoder artifact (card ``kind: encoder``) is a whole masked auto-encoder
(ViT encoder + decoder, so that ``sdft`` can keep pre-training it):

    model.safetensors     the weights evaluation uses (RC-MAE: the EMA teacher by default)
    student.safetensors   RC-MAE only: the other network of the pair
    card.json             ``arch``: the MAE spec (mltk.nn.encoders.mae.build_mae), ``weights``: which
                          network each file holds, task (data spec, class names), metrics, lineage

Evaluation protocols also take any classifier artifact (its ``embed`` features),
so a supervised model can be probed the same way as a pre-trained encoder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from mltk.core.artifact import OpenedArtifact, build_card, open_artifact, provenance
from mltk.core.errors import ArtifactError, ConfigError, UsageError
from mltk.core.registry import Registry
from mltk.core.tensor_files import safetensors_bytes
from mltk.nn.artifacts import build_for_weights, load_classifier, load_weights_exactly
from mltk.nn.encoders.mae import MaskedAutoencoder, build_mae

KIND = "encoder"
WEIGHTS_FILE = "model.safetensors"
STUDENT_FILE = "student.safetensors"
STRICT_HINT = "the card and the weights disagree; re-export or retrain the artifact"


def encoder_artifact(networks: dict[str, tuple[str, MaskedAutoencoder]], *, engine: str, recipe: str,
                     data: dict, class_names: list[str], config: dict, config_sha256: str, metrics: dict,
                     primary_metric: str, higher_is_better: bool, parent: str, relation: str,
                     extra: dict | None = None) -> tuple[dict, dict]:
    """(files, card) for Registry.save. ``networks``: file name -> (role, model), ``model.safetensors`` first."""
    if WEIGHTS_FILE not in networks:
        raise ValueError(f"an encoder artifact needs {WEIGHTS_FILE}")
    spec = networks[WEIGHTS_FILE][1].spec
    task = {"data": data, "class_names": list(class_names)}
    files, roles = {}, {}
    for filename, (role, model) in networks.items():
        metadata = provenance(engine=engine, parent=parent, relation=relation, kind=KIND, role=role, mae=model.spec,
                              task=task, config_sha256=config_sha256, format="pt")
        files[filename] = safetensors_bytes(model.state_dict(), metadata)
        roles[filename] = role
    student = networks[WEIGHTS_FILE][1]
    card = build_card(kind=KIND, engine=engine, recipe=recipe, arch=spec, weights=roles, task=task,
                      parameters=sum(p.numel() for p in student.parameters()),
                      encoder_parameters=sum(p.numel() for p in student.encoder.parameters()), metrics=metrics,
                      primary_metric=primary_metric, higher_is_better=higher_is_better, parent=parent,
                      relation=relation, config=config, config_sha256=config_sha256, **(extra or {}))
    return files, card


@dataclasses.dataclass
class LoadedEncoder:
    """Frozen features of an artifact: an MIM encoder, or any classifier's ``embed``."""

    features: Callable[[torch.Tensor], torch.Tensor]  # images float [B, C, S, S] in [0, 1] -> [B, D]
    module: torch.nn.Module  # what to move to a device and put in eval mode
    source: str
    card: dict
    weights: str  # teacher / student / model (an MAE) or classifier
    in_channels: int
    image_size: int
    mae: MaskedAutoencoder | None = None

    @property
    def task(self) -> dict:
        return self.card.get("task", {})

    def to(self, device: torch.device) -> LoadedEncoder:
        self.module.to(device).eval()
        return self


def load_mae(ref: str, *, weights: str = "default", registry: Registry | None = None) -> LoadedEncoder:
    """The masked auto-encoder an encoder artifact holds; ArtifactError when ``ref`` is anything else.

    weights: ``default`` (model.safetensors: RC-MAE's teacher unless trained otherwise),
    ``teacher`` or ``student`` (the file holding that network).
    """
    opened = open_artifact(ref, registry=registry)
    if opened.card.get("kind") != KIND:
        raise ArtifactError(f"{opened.source}: is a {opened.card.get('kind', 'unknown')!r} artifact, not a masked "
                            "auto-encoder", hint="pass an artifact made by `mltk train mae` or `mltk train rc-mae`")
    return _mae_of(opened, weights)


def load_encoder(ref: str, *, weights: str = "default", registry: Registry | None = None) -> LoadedEncoder:
    """Features of ``ref``: an encoder artifact (see load_mae) or any classifier artifact."""
    opened = open_artifact(ref, registry=registry)
    if opened.card.get("kind") == KIND:
        return _mae_of(opened, weights)
    if weights not in ("default", "model"):
        raise UsageError(f"--weights {weights}: {opened.source} is a classifier, it holds one network",
                         hint="leave --weights out")
    loaded = load_classifier(ref, registry)
    args = loaded.arch_args
    return LoadedEncoder(features=loaded.model.embed, module=loaded.model, source=loaded.source, card=loaded.card,
                         weights="classifier", in_channels=args["in_channels"], image_size=args["image_size"])


def _mae_of(opened: OpenedArtifact, weights: str) -> LoadedEncoder:
    card, source = opened.card, opened.source
    filename, role = _weights_file(card, weights, source)

    def build() -> MaskedAutoencoder:
        try:
            return build_mae(card["arch"])
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            detail = exc.message if isinstance(exc, ConfigError) else repr(exc)[:200]
            raise ArtifactError(f"{source}: the card's MAE spec cannot be built: {detail}",
                                hint="upgrade mltk, or check that the card was not edited") from None

    # Built on the meta device and compared with the file's header first: a card's sizes are not trusted.
    model = build_for_weights(build, opened.file(filename), f"{source} ({filename})", fits="the architecture",
                              hint=STRICT_HINT)
    args = card["arch"]["encoder"]["args"]
    return LoadedEncoder(features=model.features, module=model, source=source, card=card, weights=role,
                         in_channels=args["in_channels"], image_size=args["image_size"], mae=model)


def _weights_file(card: dict, weights: str, source: str) -> tuple[str, str]:
    roles = card.get("weights") or {WEIGHTS_FILE: "model"}
    if weights == "default":
        return WEIGHTS_FILE, roles.get(WEIGHTS_FILE, "model")
    for filename, role in roles.items():
        if role == weights:
            return filename, role
    raise UsageError(f"--weights {weights}: {source} holds {', '.join(sorted(set(roles.values())))}",
                     hint="use --weights default, or one of the roles listed")


def load_strict(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Load ``tensors`` into ``model``: every key present, none extra, every shape equal; else ArtifactError."""
    load_weights_exactly(model, tensors, where, hint=STRICT_HINT)
