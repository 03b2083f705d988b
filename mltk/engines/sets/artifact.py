"""Set models as artifacts (kind ``set-model``): the weights and a card whose ``set_model`` section is the
:class:`SetModelSpec` that rebuilds them and whose ``task`` says what the outputs mean (class names, or the
mixture's components and dimensions). Nothing is unpickled."""

from __future__ import annotations

import dataclasses

from mltk.core.artifact import WEIGHTS_FILE, build_card, open_artifact, provenance
from mltk.core.errors import ArtifactError
from mltk.core.registry import Registry
from mltk.core.tensor_files import load_safetensors, safetensors_bytes
from mltk.engines.sets.model import SetModel, SetModelSpec, state_mismatch

KIND = "set-model"
KIND_HINT = "train one with `mltk train umbc`"


@dataclasses.dataclass
class LoadedSetModel:
    model: SetModel  # in eval mode, on the CPU
    source: str
    card: dict

    @property
    def task(self) -> dict:
        return self.card.get("task", {})


def set_model_artifact(model: SetModel, *, config, metrics: dict, primary_metric: str, higher_is_better: bool,
                       parent: str, task: dict, extra: dict | None = None) -> tuple[dict[str, bytes], dict]:
    spec = dataclasses.asdict(model.spec)
    card = build_card(kind=KIND, engine="sets", config=config, metrics=metrics, parent=parent, relation="trained",
                      primary_metric=primary_metric, higher_is_better=higher_is_better,
                      parameters=sum(p.numel() for p in model.parameters()), recipe="umbc", set_model=spec,
                      task=task, **(extra or {}))
    metadata = provenance(engine="sets", parent=parent, relation="trained", kind=KIND, set_model=spec, task=task,
                          config_sha256=card["config_sha256"])
    return {WEIGHTS_FILE: safetensors_bytes(model.state_dict(), metadata)}, card


def load_set_model(ref: str, registry: Registry | None = None) -> LoadedSetModel:
    opened = open_artifact(ref, registry=registry, kinds=(KIND,), kind_hint=KIND_HINT)
    try:
        # cards written before pma_feedforward existed describe models with the Linear + ReLU in front of PMA
        model = SetModel(SetModelSpec.from_dict({"pma_feedforward": True, **opened.card["set_model"]}))
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactError(f"{opened.source}: its card does not describe a set model ({error})",
                            hint="train it again with this version of mltk") from None
    tensors, _ = load_safetensors(opened.file(WEIGHTS_FILE))
    problem = state_mismatch(model, tensors)
    if problem:
        raise ArtifactError(f"{opened.source}: the weights do not fit the set model its card describes: {problem}",
                            hint="train it again")
    model.load_state_dict(tensors)
    return LoadedSetModel(model.eval(), opened.source, opened.card)
