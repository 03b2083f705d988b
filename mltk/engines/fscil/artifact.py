"""FSCIL models as artifacts: the final network, the base-session weights of the layers sessions train,
and the card that rebuilds both.

``model.safetensors`` holds the network after the last session (weights,
scores, fixed masks, BatchNorm, every prototype) and, under
``base_weights.<layer>``, the weights of ``incremental.layers`` as the base
session left them: with the config in the card that is everything
``--protocol fscil`` needs to replay the sessions and score after each. The
card's ``network`` section is the :class:`NetworkSpec`, ``sessions`` the
per-session scores of the training run and the class order.
"""

from __future__ import annotations

import dataclasses

import torch

from mltk.core.artifact import WEIGHTS_FILE, build_card, open_artifact, provenance
from mltk.core.errors import ArtifactError
from mltk.core.tensor_files import load_safetensors, safetensors_bytes
from mltk.engines.fscil.network import FscilNetwork, NetworkSpec

KIND = "fscil-network"
KIND_HINT = "train one with `mltk train softnet`"
BASE_PREFIX = "base_weights."


@dataclasses.dataclass
class LoadedFscil:
    model: FscilNetwork  # the network after the last session, eval mode, CPU
    base_weights: dict[str, torch.Tensor]
    card: dict
    source: str


def fscil_artifact(model: FscilNetwork, *, base_weights: dict[str, torch.Tensor], config, metrics: dict,
                   results: list[dict], plan, class_names: list[str], primary_metric: str, parent: str,
                   extra: dict | None = None) -> tuple[dict[str, bytes], dict]:
    spec = dataclasses.asdict(model.spec)
    sessions = {"results": results, "class_order": list(plan.class_order),
                "class_names": [class_names[label] for label in plan.class_order],
                "classes_per_session": [len(classes) for classes, _ in plan.sessions]}
    card = build_card(kind=KIND, engine="fscil", config=config, metrics=metrics, parent=parent, relation="trained",
                      primary_metric=primary_metric, parameters=sum(p.numel() for p in model.parameters()),
                      recipe="softnet", network=spec, sessions=sessions, **(extra or {}))
    metadata = provenance(engine="fscil", parent=parent, relation="trained", kind=KIND, network=spec,
                          config_sha256=card["config_sha256"])
    tensors = {**model.state_dict(), **{BASE_PREFIX + name: w for name, w in base_weights.items()}}
    return {WEIGHTS_FILE: safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                                            metadata)}, card


def load_fscil(ref: str) -> LoadedFscil:
    opened = open_artifact(ref, kinds=(KIND,), kind_hint=KIND_HINT)
    try:
        spec = NetworkSpec.from_dict(opened.card["network"])
    except (KeyError, TypeError) as error:
        raise ArtifactError(f"{opened.source}: its card does not describe an FSCIL network ({error})",
                            hint="train it again with this version of mltk") from None
    model = FscilNetwork(spec)
    tensors, _ = load_safetensors(opened.file(WEIGHTS_FILE))
    base = {k[len(BASE_PREFIX):]: v for k, v in tensors.items() if k.startswith(BASE_PREFIX)}
    try:
        model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(BASE_PREFIX)})
    except RuntimeError as error:
        raise ArtifactError(f"{opened.source}: the weights do not fit the network its card describes "
                            f"({str(error).splitlines()[0]})", hint="train it again") from None
    for module in model.modules():
        if hasattr(module, "mask_fixed") and bool(module.mask_fixed):
            module.scores.requires_grad_(False)
    return LoadedFscil(model.eval(), base, opened.card, opened.source)
