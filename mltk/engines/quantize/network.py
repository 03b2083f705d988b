"""Which layers of a classifier get quantized, and the module surgery in both directions.

A :class:`QuantPlan` is plain JSON (it goes into the artifact card) and says
everything needed to rebuild the deployed network from the architecture spec:

* ``layers``: the Conv2d/Linear layers quantized, in the order the forward
  pass calls them (the bottom-up order of the progressive schedule), each
  with its bits, its input quantizer and the BatchNorm folded into it;
* ``activations``: ReLUs that feed a binarized layer and are replaced;
* each binary-input layer's ``shortcut`` (``quant.float_shortcuts``, on by
  default): how the parameter-free float path around it maps the input to
  the output shape (see :class:`~mltk.engines.quantize.layers.FloatShortcut`),
  or None: off, not a binary-input layer, or the last layer of a residual
  block (whose own residual is its float path); plans without the key (older
  artifacts) have no shortcuts;
* ``full_precision``: the layers kept in float, with the reason. The first
  layer called (the stem) and the last (the classifier) always are, as is
  standard in binarization work; so are squeeze-excitation gates (their
  input is a pooled vector that gates the features multiplicatively),
  layers matched by ``quant.skip`` and, with binary activations, the
  layers of every residual block whose narrowest tensor has fewer channels than
  ``quant.min_binary_channels`` (see :func:`narrowest_channels`): the sign
  of a narrow bottleneck keeps too little of it (MobileNetV2's early
  8-16-channel bottlenecks cost 51 points on digits when binarized, the 34
  wider layers above them 14). Each entry records the reason and its
  parameter count, the size it costs.

``to_training_form`` turns a float ImageClassifier into the QAT network in
place; ``to_deployed_form`` turns a freshly built one into the inference
network an artifact loads into; ``deployed_tensors`` reads the trained QAT
network out as that inference network's tensors plus the packed codes.
"""

from __future__ import annotations

import dataclasses
import fnmatch

import torch
from torch import nn

from mltk.core.errors import ArtifactError, UsageError
from mltk.engines.quantize.layers import (
    QUANTIZABLE,
    DeployedLayer,
    FloatShortcut,
    GatedActivation,
    QuantizedLayer,
    in_features,
    make_act_quantizer,
    make_binary_form,
    out_features,
)
from mltk.engines.quantize.packing import pack_signs, pack_symmetric, unpack_signs, unpack_symmetric
from mltk.engines.quantize.quantizers import UniformWeightQuantizer
from mltk.engines.quantize.transforms import (
    BinaryWeightQuantizer,
    CorrelationTransform,
    WeightLayout,
)

PACKED_SUFFIX = ".weight_packed"
_REPLACEABLE_ACTIVATIONS = (nn.ReLU, nn.ReLU6)
_SHAPE_ONLY = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity, nn.Flatten)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """How the QAT form quantizes (not needed to rebuild the deployed form)."""

    transform: str = "identity"  # identity | pca | learned
    parameterization: str = "cayley"
    refine_iters: int = 3
    rank: int = 0  # of the PCA correlations (0 = full)
    learned_max_dim: int = 256
    ste: str = "clipped"
    learn_step: bool = True  # uniform quantizers: LSQ (True) or post-training ranges (False)


def plan_quantization(model: nn.Module, *, image_shape: tuple[int, int, int], bits: int, act_bits: int,
                      act_kind: str, binary_activation: str, skip: tuple[str, ...] = (),
                      min_binary_channels: int = 0, float_shortcuts: bool = False, where: str = "model") -> dict:
    """The quantization plan of ``model`` (a float ImageClassifier) as a JSON-ready dict.

    act_kind: the input quantizer of quantized layers (sign, rsign, uniform,
    none); binary_activation: what replaces a ReLU feeding a binary-input
    layer (identity, rprelu); min_binary_channels: with binary inputs
    (act_bits 1), layers whose input has fewer channels stay float;
    float_shortcuts: give every binary-input layer a real-valued shortcut
    (BN(conv(sign(x))) + shortcut(x)).
    """
    order, calls, shapes = _forward_order(model, image_shape)
    if not order:
        raise UsageError(f"{where} has no Conv2d or Linear layer to quantize")
    # Imported here, not at the top: torchvision.ops pulls in torch._dynamo, seconds of every mltk start.
    from torchvision.ops import SqueezeExcitation

    inside_se = {name for se_name, module in model.named_modules() if isinstance(module, SqueezeExcitation)
                 for name, _ in module.named_modules(prefix=se_name)}
    modules = dict(model.named_modules())
    shortcuts = float_shortcuts and act_bits == 1 and act_kind in ("sign", "rsign")  # binary-input layers only
    residual_ends = _residual_block_ends(model, order) if shortcuts else set()
    narrowest = narrowest_channels(model, order)
    layers, kept = [], []
    for index, name in enumerate(order):
        reason = None
        if index == 0:
            reason = "first layer (stem), kept full precision as is standard"
        elif index == len(order) - 1:
            reason = "last layer (classifier), kept full precision as is standard"
        elif name in inside_se:
            reason = "squeeze-excitation gate"
        elif calls[name] > 1:
            reason = "called more than once per forward pass"
        elif any(fnmatch.fnmatchcase(name, pattern) for pattern in skip):
            reason = "matched quant.skip"
        elif act_bits == 1 and narrowest.get(name, min_binary_channels) < min_binary_channels:
            reason = (f"in a block narrowing to {narrowest[name]} channels, fewer than "
                      f"quant.min_binary_channels={min_binary_channels}")
        if reason:
            kept.append({"name": name, "reason": reason,
                         "parameters": sum(p.numel() for p in modules[name].parameters())})
            continue
        layer = modules[name]
        layers.append({"name": name, "type": "linear" if isinstance(layer, nn.Linear) else "conv2d",
                       "weight_shape": list(layer.weight.shape), "bits": bits, "act_bits": act_bits,
                       "act": act_kind, "in_features": in_features(layer),
                       "folded_bn": _following_batchnorm(model, name, out_features(layer)),
                       "shortcut": _describe_shortcut(layer, *shapes[name])
                       if shortcuts and name not in residual_ends else None})
    if not layers:
        listed = ", ".join(f"{k['name']} ({k['reason']})" for k in kept)
        raise UsageError(f"{where} has no quantizable layers: every Conv2d/Linear stays full precision ({listed})",
                         hint="quantization needs layers between the first and the last; use a deeper model "
                              "or fewer quant.skip patterns")
    activations = []
    if act_bits == 1:
        activations = _feeding_activations(model, {layer["name"]: layer for layer in layers}, binary_activation)
    return {"layers": layers, "activations": activations, "full_precision": kept}


def _forward_order(model: nn.Module, image_shape: tuple[int, int, int]
                   ) -> tuple[list[str], dict[str, int], dict[str, tuple[tuple[int, ...], tuple[int, ...]]]]:
    """Names of the Conv2d/Linear modules in the order one forward pass calls them, call counts, and the
    (input, output) shape of each at its first call (batch of one)."""
    order: list[str] = []
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, QUANTIZABLE):
            def hook(_module, inputs, output, name=name):
                calls[name] = calls.get(name, 0) + 1
                if calls[name] == 1:
                    order.append(name)
                    shapes[name] = (tuple(inputs[0].shape), tuple(output.shape))
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            first = next(model.parameters(), None)  # trace on the model's device (it may already be on a GPU)
            model(torch.zeros(1, *image_shape, device=first.device if first is not None else None))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return order, calls, shapes


def narrowest_channels(model: nn.Module, order: list[str]) -> dict[str, int]:
    """For each layer of ``order`` inside a block, the fewest channels of any tensor the block reads or writes.

    A block is a residual unit (a module with MobileNet's ``use_res_connect``,
    or a ResNet ``BasicBlock``/``Bottleneck``): its layers share the fate of
    its narrowest tensor, since a sign there loses what the wide layers
    around it would need (in MobileNetV2's bottlenecks binarizing the wide
    depthwise and projecting convs costs as much as the narrow expanding
    ones). Layers outside any block are left out: a plain stack of convs
    binarizes well (ConvNet-3 on digits loses 3-7 points at W1/A1).
    """
    modules = dict(model.named_modules())
    blocks = [name for name, module in modules.items()
              if hasattr(module, "use_res_connect") or type(module).__name__ in ("BasicBlock", "Bottleneck")]
    narrowest = {}
    for name in order:
        block = max((b for b in blocks if name.startswith(b + ".")), key=len, default=None)
        if block is not None:
            members = [n for n in order if n.startswith(block + ".")]
            narrowest[name] = min(min(in_features(modules[n]), out_features(modules[n])) for n in members)
    return narrowest


def shortcut_of(spec: dict, layer: nn.Module) -> FloatShortcut:
    """The FloatShortcut a plan entry describes (``"repeat"``, ``"identity+avgpool"``, ...) for ``layer``."""
    return FloatShortcut(in_features(layer), out_features(layer), pool=spec["shortcut"].endswith("+avgpool"))


def _residual_block_ends(model: nn.Module, order: list[str]) -> set[str]:
    """The last Conv2d/Linear of every block that adds its own input back (MobileNet's ``use_res_connect``).

    The block's residual already is a float path around that layer; a second
    one there would add the block input twice, doubling it at every residual
    block (2^10 in MobileNetV2) until it drowns what the binary layers add.
    """
    ends = set()
    for block_name, block in model.named_modules():
        if getattr(block, "use_res_connect", False) is True:
            inside = [name for name in order if name.startswith(block_name + ".")]
            if inside:
                ends.add(inside[-1])
    return ends


def _describe_shortcut(layer: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> str:
    """The float shortcut of a binary-input layer as the plan records it: its channel map (identity, repeat,
    group-mean, adaptive-mean), plus ``+avgpool`` when it pools to a smaller output. Kept short: the plan
    is also stored in the weights file's header."""
    channels = FloatShortcut(in_features(layer), out_features(layer)).channels()
    return channels if in_shape[2:] == out_shape[2:] else f"{channels}+avgpool"


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def _following_batchnorm(model: nn.Module, name: str, channels: int) -> str | None:
    """The BatchNorm right after ``name`` in its Sequential, when it normalises its output channels."""
    parent, child = _parent(model, name)
    if not isinstance(parent, nn.Sequential) or not child.isdigit() or int(child) + 1 >= len(parent):
        return None
    follower = parent[int(child) + 1]
    if isinstance(follower, _BATCHNORMS) and follower.num_features == channels and follower.affine \
            and follower.track_running_stats:
        prefix = name.rpartition(".")[0]
        return f"{prefix}.{int(child) + 1}" if prefix else str(int(child) + 1)
    return None


def _feeding_activations(model: nn.Module, planned: dict[str, dict], binary_activation: str) -> list[dict]:
    """ReLUs whose output reaches a binary-input layer through shape-only modules only."""
    leaves = [(name, module) for name, module in model.named_modules()
              if not list(module.children()) and name]
    found = []
    for index, (name, module) in enumerate(leaves):
        if not isinstance(module, _REPLACEABLE_ACTIVATIONS):
            continue
        for next_name, next_module in leaves[index + 1:]:
            if isinstance(next_module, _SHAPE_ONLY):
                continue
            if next_name in planned:
                found.append({"name": name, "consumer": next_name, "kind": binary_activation,
                              "channels": planned[next_name]["in_features"]})
            break
    return found


# ---------------------------------------------------------------- training form


def to_training_form(model: nn.Module, plan: dict, options: TrainingOptions) -> None:
    """Replace the planned layers and activations of a float model by their QAT modules, in place."""
    for spec in plan["layers"]:
        layer = model.get_submodule(spec["name"])
        if spec["bits"] == 1:
            layout = WeightLayout.of(layer)
            kind = options.transform
            if kind == "learned" and layout.dim > options.learned_max_dim:
                kind = "pca"  # a d x d solve per step would cost more than the layer itself
            transform = CorrelationTransform(layout, kind=kind, parameterization=options.parameterization,
                                             rank=options.rank if kind == "pca" else 0)
            weight_quantizer = BinaryWeightQuantizer(layout, transform=transform,
                                                     refine_iters=options.refine_iters)
        else:
            weight_quantizer = UniformWeightQuantizer(layer.weight, bits=spec["bits"],
                                                      learn_step=options.learn_step)
        act_quantizer = make_act_quantizer(spec["act"], spec["in_features"], ste=options.ste,
                                           act_bits=spec["act_bits"])
        shortcut = norm = None
        if spec.get("shortcut"):
            shortcut = shortcut_of(spec, layer)
            if spec["folded_bn"]:  # the shortcut joins after the BatchNorm: move it into the layer
                norm = model.get_submodule(spec["folded_bn"])
                _replace(model, spec["folded_bn"], nn.Identity())
        _replace(model, spec["name"], QuantizedLayer(layer, weight_quantizer=weight_quantizer,
                                                     act_quantizer=act_quantizer, bits=spec["bits"],
                                                     act_bits=spec["act_bits"], shortcut=shortcut, norm=norm))
    for spec in plan["activations"]:
        original = model.get_submodule(spec["name"])
        _replace(model, spec["name"], GatedActivation(original, make_binary_form(spec["kind"], spec["channels"])))


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, child = _parent(model, name)
    setattr(parent, child, module)


def quantized_layers(model: nn.Module, plan: dict) -> list[QuantizedLayer]:
    """The QuantizedLayer modules of a training-form model, in plan (bottom-up) order."""
    return [model.get_submodule(spec["name"]) for spec in plan["layers"]]


def gated_activations_of(model: nn.Module, plan: dict) -> dict[str, GatedActivation]:
    """consumer layer name -> the GatedActivation feeding it."""
    return {spec["consumer"]: model.get_submodule(spec["name"]) for spec in plan["activations"]}


# ---------------------------------------------------------------- deployed form


def to_deployed_form(model: nn.Module, plan: dict) -> None:
    """Replace the planned layers of a freshly built float model by DeployedLayers, in place."""
    for spec in plan["layers"]:
        layer = model.get_submodule(spec["name"])
        shortcut = shortcut_of(spec, layer) if spec.get("shortcut") else None
        _replace(model, spec["name"], DeployedLayer(layer, bits=spec["bits"], act_kind=spec["act"],
                                                    act_bits=spec["act_bits"], shortcut=shortcut))
        if spec["folded_bn"]:
            _replace(model, spec["folded_bn"], nn.Identity())
    for spec in plan["activations"]:
        _replace(model, spec["name"], make_binary_form(spec["kind"], spec["channels"]))


@torch.no_grad()
def fill_deployed(deployed: nn.Module, trained: nn.Module, plan: dict) -> None:
    """Copy a trained QAT network into a deployed-form one: codes, folded scales, thresholds, the rest."""
    trained_state = trained.state_dict()
    handled: set[str] = set()
    for spec in plan["layers"]:
        source: QuantizedLayer = trained.get_submodule(spec["name"])
        target: DeployedLayer = deployed.get_submodule(spec["name"])
        codes, scale = source.deployable()
        target.codes.copy_(codes)
        out_scale = scale.clone()
        out_bias = source.layer.bias.detach().clone() if source.layer.bias is not None \
            else torch.zeros_like(scale)
        if spec["folded_bn"]:
            bn = source.norm if source.norm is not None else trained.get_submodule(spec["folded_bn"])
            gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            out_bias = (out_bias - bn.running_mean) * gain + bn.bias
            out_scale = out_scale * gain
        target.out_scale.copy_(out_scale)
        target.out_bias.copy_(out_bias)
        if target.input_quantizer is not None:
            quantizer = source.act_quantizer
            if hasattr(target.input_quantizer, "threshold"):
                target.input_quantizer.threshold.copy_(quantizer.threshold)
            else:
                target.input_quantizer.step.copy_(quantizer.step)
        handled.add(spec["name"] + ".")
    for spec in plan["activations"]:
        target = deployed.get_submodule(spec["name"])
        source = trained.get_submodule(spec["name"]).binary_form
        target.load_state_dict(source.state_dict())
        handled.add(spec["name"] + ".")
    for key, value in deployed.state_dict().items():
        if not any(key.startswith(prefix) for prefix in handled):
            value.copy_(trained_state[key])


VECTOR_DTYPES = {"float16": torch.float16, "float32": torch.float32}
_FLOAT16_MAX = float(torch.finfo(torch.float16).max)


def deployed_tensors(deployed: nn.Module, plan: dict, *, vector_dtype: str = "float32") -> dict[str, torch.Tensor]:
    """The tensors an artifact stores: the deployed state plus each layer's codes, packed.

    vector_dtype: the dtype of the per-channel float vectors (folded scales and biases, RSign thresholds,
    RPReLU, the BatchNorms and biases of the float layers): float32, or float16 to halve them; a vector
    with a value beyond float16's range stays float32. Weight matrices (stem, classifier) stay float32.
    The loader casts everything back to float32.
    """
    dtype = VECTOR_DTYPES[vector_dtype]
    tensors = {}
    for key, value in deployed.state_dict().items():
        value = value.detach().clone()
        if dtype != torch.float32 and value.is_floating_point() and value.dim() <= 1 \
                and bool(value.abs().max() <= _FLOAT16_MAX if value.numel() else True):
            value = value.to(dtype)
        tensors[key] = value
    for spec in plan["layers"]:
        codes = deployed.get_submodule(spec["name"]).codes
        if spec["bits"] == 1:
            tensors[spec["name"] + PACKED_SUFFIX] = pack_signs(codes)
        else:
            tensors[spec["name"] + PACKED_SUFFIX] = pack_symmetric(codes, bits=spec["bits"])
    return tensors


def load_deployed_tensors(deployed: nn.Module, plan: dict, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Load an artifact's tensors into a deployed-form model: unpack codes, load the rest strictly."""
    tensors = dict(tensors)
    for spec in plan["layers"]:
        key = spec["name"] + PACKED_SUFFIX
        if key not in tensors:
            raise ArtifactError(f"{where}: the packed weights {key} are missing",
                                hint="the artifact is incomplete; quantize the model again")
        stored = tensors.pop(key)
        shape = tuple(spec["weight_shape"])
        try:
            if spec["bits"] == 1:
                codes = unpack_signs(stored, shape)
            else:
                codes = unpack_symmetric(stored, bits=spec["bits"], shape=shape)
        except ValueError as exc:
            raise ArtifactError(f"{where}: {key} does not hold {spec['bits']}-bit codes of shape {shape} ({exc})",
                                hint="the artifact is corrupt; quantize the model again") from None
        deployed.get_submodule(spec["name"]).codes.copy_(codes)
    own = deployed.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise ArtifactError(f"{where}: the stored tensors do not fit the quantization plan in the card "
                            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another "
                            f"shape; first: {first})",
                            hint="the card and weights come from different runs; quantize the model again")
    deployed.load_state_dict(tensors, strict=True)
