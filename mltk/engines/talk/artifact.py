"""Talking-head models as artifacts: one safetensors file for every part, and a card that rebuilds them.

A ``talking-head-model`` artifact is ``model.safetensors`` holding all the
sub-networks under their key prefixes (``generator.``, ``image_encoder.``,
``audio_encoder.``, ``lip_edit.``, ``posterior.``, ``motion_edit.``,
``priors.flow.``, ``priors.gaussian.``, ``sync.``: SadTalker's one-file
layout) and a card whose ``talker`` section is the :class:`TalkerSpec`.
Nothing is unpickled: the modules are rebuilt from the spec and the weights
loaded strictly.
"""

from __future__ import annotations

import dataclasses

from mltk.core.artifact import WEIGHTS_FILE, build_card, open_artifact, provenance
from mltk.core.errors import ArtifactError
from mltk.core.registry import Registry
from mltk.core.tensor_files import load_safetensors, safetensors_bytes
from mltk.engines.talk.model import StyleTalkerModel, TalkerSpec

KIND = "talking-head-model"
KIND_HINT = "train one with `mltk train styletalker` (add data=video-folder:PATH for your own videos)"


def talker_artifact(model: StyleTalkerModel, *, recipe: str, config, metrics: dict, primary_metric: str | None,
                    higher_is_better: bool, parent: str, extra: dict | None = None) -> tuple[dict[str, bytes], dict]:
    """(files, card) for ``Registry.save``."""
    spec = dataclasses.asdict(model.spec)
    card = build_card(kind=KIND, engine="talk", config=config, metrics=metrics, parent=parent, relation="trained",
                      primary_metric=primary_metric, higher_is_better=higher_is_better,
                      parameters=sum(p.numel() for p in model.parameters()), recipe=recipe, talker=spec,
                      **(extra or {}))
    metadata = provenance(engine="talk", parent=parent, relation="trained", kind=KIND, talker=spec,
                          config_sha256=card["config_sha256"])
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    return {WEIGHTS_FILE: safetensors_bytes(state, metadata)}, card


def load_model(ref: str, registry: Registry | None = None) -> tuple[StyleTalkerModel, str, dict]:
    """(model in eval mode on the CPU, the source it came from, its card) for a registry reference or folder."""
    opened = open_artifact(ref, registry=registry, kinds=(KIND,), kind_hint=KIND_HINT, lone_files=True)
    try:
        spec = TalkerSpec.from_dict(opened.card["talker"])
        model = StyleTalkerModel(spec)
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactError(f"{opened.source}: its card does not describe a talking-head model ({error})",
                            hint="train it again with this version of mltk") from None
    tensors, _ = load_safetensors(opened.file(WEIGHTS_FILE))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise ArtifactError(f"{opened.source}: the weights do not fit the model its card describes "
                            f"({str(error).splitlines()[0]})", hint="train it again") from None
    return model.eval(), opened.source, opened.card


def latest_talker(registry: Registry | None = None) -> str:
    """The reference of the newest talking-head model in the registry."""
    records = [record for record in (registry or Registry()).list() if record.kind == KIND]
    if not records:
        raise ArtifactError("no talking-head model in the registry (no `styletalker` artifact)",
                            hint=f"{KIND_HINT}, or pass --model REF")
    return max(records, key=lambda record: (record.created, record.version)).ref
