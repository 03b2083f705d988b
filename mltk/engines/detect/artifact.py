"""Oriented detectors as artifacts: the weights, the card that rebuilds them, and reading them back verified.

An ``oriented-detector`` artifact is ``model.safetensors`` (with provenance
in its metadata) and a card whose ``detector`` section is the
:class:`DetectorSpec` (backbone, heads, graph settings, class names) and
whose ``patches`` section gives the patch size and overlap it was trained
with, the defaults of ``mltk detect``. Nothing is unpickled: the model is
rebuilt from the spec and the weights are loaded strictly.
"""

from __future__ import annotations

import dataclasses

from mltk.core.artifact import WEIGHTS_FILE, build_card, open_artifact, provenance
from mltk.core.errors import ArtifactError
from mltk.core.registry import Registry
from mltk.core.tensor_files import load_safetensors, safetensors_bytes
from mltk.engines.detect.model import DetectorSpec, OrientedDetector

KIND = "oriented-detector"
KIND_HINT = "train one with `mltk train uagdet` or `mltk train oriented-rcnn`"


@dataclasses.dataclass
class LoadedDetector:
    model: OrientedDetector  # in eval mode, on the CPU
    source: str  # the registry reference or folder it came from
    card: dict

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.spec.classes

    @property
    def patch_size(self) -> int:
        return int(self.card["patches"]["patch_size"])

    @property
    def overlap(self) -> int:
        return int(self.card["patches"]["overlap"])


def detector_artifact(model: OrientedDetector, *, engine: str, recipe: str, config, metrics: dict,
                      primary_metric: str, parent: str, patch_size: int, overlap: int,
                      extra: dict | None = None) -> tuple[dict[str, bytes], dict]:
    """(files, card) for ``Registry.save``."""
    spec = dataclasses.asdict(model.spec)
    patches = {"patch_size": patch_size, "overlap": overlap}
    card = build_card(kind=KIND, engine=engine, config=config, metrics=metrics, parent=parent, relation="trained",
                      primary_metric=primary_metric, parameters=sum(p.numel() for p in model.parameters()),
                      recipe=recipe, detector=spec, patches=patches, **(extra or {}))
    metadata = provenance(engine=engine, parent=parent, relation="trained", kind=KIND, detector=spec,
                          patches=patches, config_sha256=card["config_sha256"])
    return {WEIGHTS_FILE: safetensors_bytes(model.state_dict(), metadata)}, card


def load_detector(ref: str, registry: Registry | None = None) -> LoadedDetector:
    """The detector ``ref`` names (registry reference or exported folder), its files checked."""
    opened = open_artifact(ref, registry=registry, kinds=(KIND,), kind_hint=KIND_HINT)
    try:
        spec = DetectorSpec.from_dict(opened.card["detector"])
    except (KeyError, TypeError) as error:
        raise ArtifactError(f"{opened.source}: its card does not describe a detector ({error})",
                            hint="train it again with this version of mltk") from None
    model = OrientedDetector(spec)
    tensors, _ = load_safetensors(opened.file(WEIGHTS_FILE))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise ArtifactError(f"{opened.source}: the weights do not fit the detector its card describes "
                            f"({str(error).splitlines()[0]})", hint="train it again") from None
    return LoadedDetector(model.eval(), opened.source, opened.card)


def latest_detector(registry: Registry | None = None, *, prefer_recipe: str = "uagdet") -> str:
    """The reference of the newest detector artifact, one trained by ``prefer_recipe`` if there is one."""
    records = [record for record in (registry or Registry()).list() if record.kind == KIND]
    if not records:
        raise ArtifactError("no oriented detector in the registry", hint=f"{KIND_HINT}, or pass --model REF")
    preferred = [record for record in records if record.card().get("recipe") == prefer_recipe]
    newest = max(preferred or records, key=lambda record: (record.created, record.version))
    return newest.ref

