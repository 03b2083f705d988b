"""Which registered architecture (and options) a bare state_dict belongs to.

A foreign ``.pt`` or ``.safetensors`` file holds tensors but no architecture.
``infer_architecture`` builds candidate models and keeps the first whose keys
and every tensor shape match the file exactly: torchvision's MobileNetV2/V3
(any common width multiplier), the ConvNet (width, depth, norm and pooling
read off the tensors), the CIFAR ResNets, and any other registered
architecture at its default options. When nothing matches, the error names
the nearest architectures by the share of keys they have in common.

Two things no weight shape reveals are taken from the caller: the input
size, and MobileNet's stem stride (1 for inputs of 64 px or less, else 2,
unless ``options`` says otherwise).

    found = infer_architecture(tensors, image_size=32)
    model = build_model(found.arch, num_classes=found.num_classes,
                        in_channels=found.in_channels, image_size=32, **found.options)
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

import torch
from torch import nn

from mltk.core.errors import ConfigError, UsageError
from mltk.nn.classifiers.architectures import arch_names, build_model, describe_archs

MOBILENET_WIDTHS = (1.0, 0.5, 0.75, 0.35, 0.25, 1.25, 1.3, 1.4, 1.5, 2.0)
_PROBE_CLASSES = 10
_PROBE_CHANNELS = 3


@dataclasses.dataclass(frozen=True)
class InferredArch:
    arch: str
    options: dict
    num_classes: int
    in_channels: int


def strip_prefix(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop mltk's ``net.`` prefix when every key has it (an ImageClassifier's own state_dict)."""
    if tensors and all(key.startswith("net.") for key in tensors):
        return {key[4:]: value for key, value in tensors.items()}
    return dict(tensors)


def _comparable(keys) -> set[str]:
    # Pre-0.4.1 checkpoints have no BatchNorm step counters; they change nothing.
    return {key for key in keys if not key.endswith("num_batches_tracked")}


def infer_architecture(tensors: dict[str, torch.Tensor], *, image_size: int, arch: str = "auto",
                       options: dict | None = None, where: str = "state_dict") -> InferredArch:
    """The architecture, options, classes and input channels of ``tensors``; UsageError when none fits."""
    state = strip_prefix(tensors)
    keys = _comparable(state)
    given = dict(options or {})
    names = arch_names() if arch == "auto" else [arch]
    if arch != "auto" and arch not in arch_names():
        build_model(arch, num_classes=1, in_channels=1, image_size=image_size)  # raises UnknownArchError
    overlaps: dict[str, tuple[float, int]] = {}
    key_matched: list[str] = []
    for name in names:
        for candidate in _option_candidates(name, state, image_size, given):
            probe = _try_build(name, candidate, image_size)
            if probe is None:
                continue
            probe_state = probe.net.state_dict()
            probe_keys = _comparable(probe_state)
            shared = len(keys & probe_keys)
            overlaps[name] = max(overlaps.get(name, (0.0, 0)), (shared / max(len(keys | probe_keys), 1), shared))
            if probe_keys != keys:
                if name.startswith("mobilenet"):
                    break  # the width changes shapes, never keys
                continue
            if name not in key_matched:
                key_matched.append(name)
            found = _fit_shapes(probe.net, state, name, candidate, image_size)
            if found is not None:
                return found
    if key_matched:
        tried = ", ".join(key_matched)
        raise UsageError(f"{where}: its keys are those of {tried}, but no option setting gives its tensor shapes",
                         hint=f"pass --arch {key_matched[0]} with its options (e.g. model.options.width_mult=0.5)")
    nearest = sorted(overlaps.items(), key=lambda item: item[1], reverse=True)[:3]
    listed = ", ".join(f"{name} ({shared} of the file's {len(keys)} keys)"
                       for name, (_, shared) in nearest) or "none"
    first = sorted(keys)[0] if keys else "no tensors"
    what = f"not those of {arch}" if arch != "auto" else "those of no architecture mltk builds"
    # Naming --arch here would send the user round in a circle: no architecture has exactly these keys.
    raise UsageError(f"{where}: its keys are {what} (first key: {first!r}); nearest: {listed}",
                     hint="only part of the keys match, so no --arch value will load it; save the weights of a "
                          "model mltk builds (`mltk recipes` lists them; torchvision's MobileNetV2/V3 "
                          "state_dicts load as they are)")


def _try_build(name: str, options: dict, image_size: int) -> nn.Module | None:
    return _try_build_shaped(name, options, image_size, _PROBE_CLASSES, _PROBE_CHANNELS)


def _fit_shapes(probe: nn.Module, state: dict, name: str, options: dict,
                image_size: int) -> InferredArch | None:
    """The probe's classes and channels set from the file; None if any other shape differs."""
    linears = [name for name, m in probe.named_modules() if isinstance(m, nn.Linear)]
    convs = [name for name, m in probe.named_modules() if isinstance(m, nn.Conv2d)]
    num_classes, in_channels = _PROBE_CLASSES, _PROBE_CHANNELS
    if linears and f"{linears[-1]}.weight" in state:
        num_classes = int(state[f"{linears[-1]}.weight"].shape[0])
    if convs and f"{convs[0]}.weight" in state:
        in_channels = int(state[f"{convs[0]}.weight"].shape[1])
    model = _try_build_shaped(name, options, image_size, num_classes, in_channels)
    if model is None:
        return None
    own = model.net.state_dict()
    if any(own[key].shape != state[key].shape for key in _comparable(own)):
        return None
    return InferredArch(name, dict(options), num_classes, in_channels)


def _try_build_shaped(name: str, options: dict, image_size: int, num_classes: int, in_channels: int):
    """The model on the meta device (shapes without memory or initialisation), or None if it cannot be built."""
    try:
        with torch.device("meta"):
            return build_model(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                               **options)
    except (ConfigError, UsageError, ValueError, TypeError, RuntimeError, NotImplementedError):
        return None


def _option_candidates(name: str, state: dict, image_size: int, given: dict) -> Iterator[dict]:
    """Option settings worth trying for ``name``; ``given`` options are always kept as given."""
    if name.startswith("mobilenet"):
        stride = given.get("stem_stride", 1 if image_size <= 64 else 2)
        widths = [given["width_mult"]] if "width_mult" in given else MOBILENET_WIDTHS
        for width in widths:
            yield {**given, "width_mult": float(width), "stem_stride": stride}
        return
    if name == "convnet":
        yield from _convnet_candidates(state, image_size, given)
        return
    entry = next((a for a in describe_archs() if a["name"] == name), None)
    choices = {k: v for k, v in (entry or {}).get("choices", {}).items() if k not in given}
    combos = itertools.islice(itertools.product(*choices.values()), 8) if choices else [()]
    for combo in combos:
        yield {**given, **dict(zip(choices, combo, strict=True))}


def _convnet_candidates(state: dict, image_size: int, given: dict) -> Iterator[dict]:
    conv_keys = sorted((k for k in state if k.startswith("features.") and k.endswith(".weight")
                        and state[k].dim() == 4), key=lambda k: int(k.split(".")[1]))
    if not conv_keys or "classifier.weight" not in state:
        return
    width = int(state[conv_keys[0]].shape[0])
    depth = len(conv_keys)
    if any(k.endswith("running_mean") for k in state):
        norms = ["batchnorm"]
    elif any(k.startswith("features.") and state[k].dim() == 1 and k.endswith(".weight") for k in state):
        norms = ["instancenorm", "layernorm"]  # the same tensors; instance norm is the default
    else:
        norms = ["none"]
    flat = int(state["classifier.weight"].shape[1])
    poolings = ["none"] if flat == width * image_size * image_size else ["avgpool", "maxpool"]
    for norm, pooling in itertools.product(norms, poolings):
        yield {"width": width, "depth": depth, "norm": norm, "pooling": pooling, **given}
