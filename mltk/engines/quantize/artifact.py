"""Quantized classifiers as artifacts: packed codes on disk, the deployed network on load.

``model.safetensors`` holds, for every quantized layer ``L``:

* ``L.weight_packed``: the codes at their true width (uint8, 8 binary
  weights per byte; 2- and 4-bit levels packed 4 or 2 per byte; 8-bit levels
  as int8),
* ``L.out_scale``, ``L.out_bias`` ([O]): the weight scale with the
  following BatchNorm folded in,
* ``L.input_quantizer.threshold`` (sign inputs) or ``.step`` (uniform inputs),

and every other tensor of the network (stem, classifier, BatchNorms not
folded, RPReLU). Weight matrices are float32; the per-channel vectors are
float32, or float16 under ``quant.vector_dtype=float16`` (cast back to
float32 on load). The card's ``quantization.plan`` says which layers are
quantized and how (including each binary-input layer's float shortcut),
which rebuilds the deployed network from the architecture spec;
``tensor_bits`` gives the stored bits of every tensor.

Loading (:func:`load_quantized`, registered for the card kinds
``binarized-classifier`` and ``quantized-classifier``) builds the deployed
network: sign activations and unpacked +1/-1 weights, never the float
shadow weights, which are not stored at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors_bytes

from mltk.core.artifact import build_card, provenance
from mltk.core.errors import ArtifactError
from mltk.core.tensor_files import (
    TensorLayout,
    load_safetensors,
    read_tensor_layouts,
    safetensors_bytes,
    tensor_layout,
)
from mltk.engines.quantize.network import PACKED_SUFFIX, load_deployed_tensors, to_deployed_form
from mltk.engines.quantize.packing import packed_size
from mltk.nn import ImageClassifier
from mltk.nn.artifacts import (
    WEIGHTS_FILE,
    network_from_card,
    refuse_misfit,
    register_classifier_kind,
)

KIND_BINARY = "binarized-classifier"
KIND_QUANTIZED = "quantized-classifier"
RELATION = "quantized"


def card_kind(bits: int) -> str:
    return KIND_BINARY if bits == 1 else KIND_QUANTIZED


def tensor_bits(tensors: dict[str, torch.Tensor], plan: dict) -> dict[str, int]:
    """Stored bits per weight of each tensor: the layer's bits for packed codes, else the dtype's."""
    packed_bits = {spec["name"] + PACKED_SUFFIX: spec["bits"] for spec in plan["layers"]}
    return {key: packed_bits.get(key, tensor.element_size() * 8) for key, tensor in sorted(tensors.items())}


def storage_summary(tensors: dict[str, torch.Tensor], plan: dict) -> dict:
    """Weights and bytes stored at low precision and in float, from the tensors themselves."""
    packed_keys = {spec["name"] + PACKED_SUFFIX for spec in plan["layers"]}
    quantized_weights = sum(int(torch.tensor(spec["weight_shape"]).prod()) for spec in plan["layers"])
    float_values = sum(t.numel() for k, t in tensors.items() if k not in packed_keys and t.is_floating_point())
    return {"quantized_weights": quantized_weights,
            "quantized_bytes": sum(tensors[k].numel() * tensors[k].element_size() for k in packed_keys),
            "float_values": float_values,
            "float_bytes": sum(t.numel() * t.element_size() for k, t in tensors.items() if k not in packed_keys)}


def quantized_artifact(deployed: ImageClassifier, tensors: dict[str, torch.Tensor], *, plan: dict,
                       quantization: dict, task: dict, parent: str, config: dict, config_sha256: str,
                       metrics: dict, primary_metric: str, extra: dict | None = None) -> tuple[dict, dict]:
    """(files, card) for :meth:`Registry.save`."""
    bits = quantization["bits"]
    spec = deployed.spec
    kind = card_kind(bits)
    metadata = provenance(engine="quantize", parent=parent, relation=RELATION, kind=kind, arch=spec, task=task,
                          config_sha256=config_sha256, format="pt", quantization={**quantization, "plan": plan})
    files = {WEIGHTS_FILE: safetensors_bytes(tensors, metadata)}
    storage = storage_summary(tensors, plan)
    card = build_card(kind=kind, engine="quantize", arch=spec, task=task,
                      parameters=sum(int(torch.tensor(s["weight_shape"]).prod()) for s in plan["layers"])
                      + storage["float_values"], metrics=metrics, primary_metric=primary_metric,
                      parent=parent, relation=RELATION,
                      quantization={**quantization, "plan": plan, "storage": storage},
                      tensor_bits=tensor_bits(tensors, plan), config=config, config_sha256=config_sha256,
                      **(extra or {}))
    return files, card


def build_deployed(card: dict, where: str) -> ImageClassifier:
    """The deployed-form network a card describes, without weights."""
    quantization = card.get("quantization") or {}
    plan = quantization.get("plan")
    if not isinstance(plan, dict) or "layers" not in plan:
        raise ArtifactError(f"{where}: the card has no quantization plan",
                            hint="the card was edited or comes from another tool; quantize the model again")
    model = network_from_card(card["arch"], where)
    try:
        to_deployed_form(model, plan)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{where}: the quantization plan does not fit the architecture ({exc})",
                            hint="the card was edited; quantize the model again") from None
    return model


def stored_layouts(skeleton: ImageClassifier, plan: dict) -> dict[str, TensorLayout]:
    """The layout of every tensor an artifact of the deployed network ``skeleton`` stores: its state plus
    each quantized layer's packed codes."""
    layouts = {key: tensor_layout(value) for key, value in skeleton.state_dict().items()}
    for spec in plan["layers"]:
        numel = math.prod(spec["weight_shape"])
        size = numel if spec["bits"] == 8 else packed_size(numel, spec["bits"])
        layouts[spec["name"] + PACKED_SUFFIX] = TensorLayout((size,), "int")
    return layouts


def load_quantized(card: dict, read: Callable[[str], Path], where: str) -> ImageClassifier:
    """The deployed network of a quantized artifact (registered as its kinds' classifier loader).

    The network is built on the ``meta`` device first and compared with the weights file's header, so a
    card asking for a network far larger than its weights is refused before any memory is given to it.
    """
    weights = read(WEIGHTS_FILE)
    with torch.device("meta"):
        skeleton = build_deployed(card, where)
    refuse_misfit(stored_layouts(skeleton, card["quantization"]["plan"]), read_tensor_layouts(weights), where,
                  fits="the quantization plan in the card",
                  hint="the card and weights come from different runs; quantize the model again")
    model = build_deployed(card, where)
    tensors, _ = load_safetensors(weights)
    load_deployed_tensors(model, card["quantization"]["plan"], tensors, where)
    return model.eval()


def deployed_from_bytes(card: dict, weights: bytes, where: str) -> ImageClassifier:
    """:func:`load_quantized` from the serialized weights in memory (the save path checks itself with it)."""
    model = build_deployed(card, where)
    load_deployed_tensors(model, card["quantization"]["plan"], load_safetensors_bytes(weights), where)
    return model.eval()


register_classifier_kind(KIND_BINARY, load_quantized)
register_classifier_kind(KIND_QUANTIZED, load_quantized)

