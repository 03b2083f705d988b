"""Architectures by name, and the JSON spec that rebuilds them.

A builder registers with ``@register_arch(name, description=...)`` and has the
signature ``builder(num_classes, in_channels, image_size, *, option=default,
...) -> nn.Module`` where the module has ``forward(x)`` and ``embed(x)``. The
keyword-only parameters are the arch's options: their defaults say their type,
and ``choices`` lists the allowed values of the options that are enumerations.
Everything a user can get wrong (an unknown arch, a mistyped option, a bad
value, a spec with a key missing) is checked here before the builder runs and
reported all at once as a ``ConfigError`` with the nearest valid name, because
these names come from command lines, YAML presets and artifact cards.

Sizes come from the same places, so they are bounded too: the shape
arguments and each size option (``maxima`` at registration) have a ceiling,
and every model is first assembled on the ``meta`` device, where tensors have
shapes but no memory, and refused if it holds more than ``MAX_PARAMETERS``.
A card asking for ``width=10**9`` is an error, not an attempt to allocate
terabytes.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from mltk.core.errors import ConfigError, UsageError
from mltk.nn.classifiers.classifier import ImageClassifier

SHAPE_ARGS = ("num_classes", "in_channels", "image_size")
SPEC_KEYS = ("arch", "args", "mean", "std")
# Names an option may not take: they would collide with build_model's own
# keyword arguments or with the shape arguments stored beside the options.
RESERVED_NAMES = frozenset(SHAPE_ARGS) | {"arch", "mean", "std"}
# Option defaults must be JSON scalars so that the spec survives a card.
OPTION_TYPES = (bool, int, float, str)
DEFAULT_CHANNEL_STAT = 0.5
# Ceilings far above any model mltk trains, low enough that a hostile card or a
# typo cannot ask for more memory than a workstation has: 10**9 float32
# parameters are 4 GB. The image readers refuse images above 4096 pixels a side.
MAX_SHAPE = {"num_classes": 100_000, "in_channels": 1024, "image_size": 4096}
MAX_PARAMETERS = 1_000_000_000
META = torch.device("meta")

Builder = Callable[..., nn.Module]


class UnknownArchError(UsageError):
    """An architecture name that no builder registered."""

    def __init__(self, name: str, known: Sequence[str]):
        self.name = name
        self.known = list(known)
        nearest = difflib.get_close_matches(name, self.known, n=1)
        guess = f"; did you mean {nearest[0]!r}?" if nearest else ""
        super().__init__(
            f"unknown architecture {name!r}{guess} Known: {', '.join(self.known)}",
            hint="use one of the known names, or register a builder with mltk.nn.register_arch",
        )


@dataclass(frozen=True)
class ArchEntry:
    """One registered builder and what its options are."""

    name: str
    description: str
    builder: Builder
    defaults: dict[str, bool | int | float | str]
    choices: dict[str, tuple] = field(default_factory=dict)
    maxima: dict[str, int | float] = field(default_factory=dict)  # the largest value of each size option


_ARCHS: dict[str, ArchEntry] = {}


# ---------------------------------------------------------------- registering


def register_arch(
    name: str,
    *,
    description: str,
    choices: dict[str, Sequence] | None = None,
    maxima: dict[str, int | float] | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator that makes ``builder`` buildable as ``name``.

    ``choices`` maps an option to its allowed values, e.g.
    ``{"norm": ("batchnorm", "instancenorm")}``; ``maxima`` maps a size option
    to its largest value, e.g. ``{"depth": 64}`` (checked before the builder
    runs, so that even a skeleton of a million layers is never assembled).
    """

    def decorator(builder: Builder) -> Builder:
        defaults = _option_defaults(name, builder)
        allowed = {option: tuple(values) for option, values in (choices or {}).items()}
        for option, values in allowed.items():
            if option not in defaults:
                raise TypeError(f"{name}: choices given for {option!r}, which is not an option")
            if defaults[option] not in values:
                raise TypeError(f"{name}: default of {option!r} is not one of its choices")
        for option, ceiling in (maxima or {}).items():
            if option not in defaults or isinstance(defaults[option], (bool, str)):
                raise TypeError(f"{name}: a maximum given for {option!r}, which is not a numeric option")
            if defaults[option] > ceiling:
                raise TypeError(f"{name}: default of {option!r} is above its maximum")
        previous = _ARCHS.get(name)
        if previous is not None and _qualified(previous.builder) != _qualified(builder):
            raise ValueError(
                f"architecture {name!r} is already registered by {_qualified(previous.builder)}"
            )
        _ARCHS[name] = ArchEntry(name, description, builder, defaults, allowed, dict(maxima or {}))
        return builder

    return decorator


def _qualified(builder: Builder) -> str:
    # Compared instead of identity so that re-importing a module (reload, a
    # second import path) re-registers its own builders without complaint.
    return f"{builder.__module__}.{builder.__qualname__}"


def _option_defaults(name: str, builder: Builder) -> dict[str, bool | int | float | str]:
    """The builder's keyword-only options and their defaults, checked."""
    parameters = list(inspect.signature(builder).parameters.values())
    leading = tuple(parameter.name for parameter in parameters[: len(SHAPE_ARGS)])
    if leading != SHAPE_ARGS:
        raise TypeError(f"{name}: a builder's first parameters must be {SHAPE_ARGS}, got {leading}")
    defaults = {}
    for parameter in parameters[len(SHAPE_ARGS) :]:
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"{name}: option {parameter.name!r} must be keyword-only")
        if parameter.name in RESERVED_NAMES:
            raise TypeError(f"{name}: {parameter.name!r} is reserved and cannot be an option")
        if type(parameter.default) not in OPTION_TYPES:
            raise TypeError(
                f"{name}: option {parameter.name!r} needs a bool, int, float or str default"
            )
        defaults[parameter.name] = parameter.default
    return defaults


# ---------------------------------------------------------------- looking up


def arch_names() -> list[str]:
    """Every registered architecture name, sorted."""
    return sorted(_ARCHS)


def describe_archs() -> list[dict]:
    """``[{"name", "description", "options": {option: default}, "choices": {...}}]``, sorted."""
    return [
        {
            "name": entry.name,
            "description": entry.description,
            "options": dict(entry.defaults),
            "choices": {option: list(values) for option, values in entry.choices.items()},
        }
        for entry in (_ARCHS[name] for name in arch_names())
    ]


def _lookup(arch: str) -> ArchEntry:
    entry = _ARCHS.get(arch) if isinstance(arch, str) else None
    if entry is None:
        raise UnknownArchError(str(arch), arch_names())
    return entry


def arch_option_problems(arch: object, options: object) -> list[str]:
    """Config problems of the fields ``arch`` and ``options``, as far as they are known before the data is:
    an unknown name or option, a wrong type, a value outside its choices or above its maximum.

    A recipe's model section returns these from ``value_problems()``, so a typo
    under ``model.options`` is listed with every other config problem.
    """
    entry = _ARCHS.get(arch) if isinstance(arch, str) else None
    if entry is None:
        return [f"arch: {UnknownArchError(str(arch)[:80], arch_names()).message}"]
    if not isinstance(options, dict):
        return [f"options: expected a mapping of option names to values, got {type(options).__name__}"]
    return [f"options: {problem}" for problem in _option_problems(entry, options)]


def option_problems_error(arch: str, problems: list[str]) -> ConfigError:
    """The error a builder raises for option values it refuses (ranges, combinations)."""
    return ConfigError(problems, source=f"architecture {arch!r}", hint=_options_hint(arch))


def _options_hint(arch: str) -> str:
    return f"see describe_archs() for the options of {arch!r} and their defaults"


# ---------------------------------------------------------------- building


def build_model(
    arch: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **options,
) -> ImageClassifier:
    """Build ``arch`` for inputs [B, in_channels, image_size, image_size] in [0, 1].

    ``mean``/``std`` default to 0.5 per channel (inputs then span [-1, 1]).
    Options left out take the builder's defaults; all of them go into the spec.
    """
    shape = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    return _build(arch, shape, mean, std, options)


def build_from_spec(spec: dict, *, device: torch.device | str | None = None) -> ImageClassifier:
    """Rebuild the model whose ``.spec`` this is (weights not included).

    ``device="meta"`` gives its skeleton: every parameter and buffer with its
    shape and dtype but no memory, to compare with stored weights before
    anything is allocated.
    """
    if not isinstance(spec, dict):
        found = type(spec).__name__
        raise ConfigError(
            [f"a spec must be a JSON object with keys {list(SPEC_KEYS)}, got {found}"],
            source="model spec",
        )
    problems = [f"missing key {key!r}" for key in SPEC_KEYS if key not in spec]
    problems += [f"unknown key {key!r}" for key in spec if key not in SPEC_KEYS]
    args = spec.get("args", {})
    if not isinstance(args, dict):
        problems.append(f"'args' must be a JSON object, got {type(args).__name__}")
        args = {}
    problems += [f"'args' is missing {key!r}" for key in SHAPE_ARGS if key not in args]
    if problems:
        raise ConfigError(problems, source="model spec", hint="save the spec from model.spec")
    shape = {key: args[key] for key in SHAPE_ARGS}
    options = {key: value for key, value in args.items() if key not in SHAPE_ARGS}
    return _build(spec["arch"], shape, spec["mean"], spec["std"], options, device=device)


def _build(
    arch: str,
    shape: dict[str, int],
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    options: dict,
    *,
    device: torch.device | str | None = None,
) -> ImageClassifier:
    entry = _lookup(arch)
    problems = _shape_problems(shape)
    problems += _option_problems(entry, options)
    channels = shape["in_channels"] if _is_positive_int(shape["in_channels"]) else None
    mean_values, mean_problems = _channel_stats("mean", mean, channels, positive=False)
    std_values, std_problems = _channel_stats("std", std, channels, positive=True)
    problems += mean_problems + std_problems
    if problems:
        raise ConfigError(problems, source=f"architecture {arch!r}", hint=_options_hint(arch))
    resolved = {**entry.defaults, **_canonical(entry, options)}

    def assemble() -> ImageClassifier:
        net = entry.builder(shape["num_classes"], shape["in_channels"], shape["image_size"], **resolved)
        return ImageClassifier(
            net, arch=arch, args={**shape, **resolved}, mean=mean_values, std=std_values
        )

    with torch.device(META):
        skeleton = assemble()
    parameters = sum(parameter.numel() for parameter in skeleton.parameters())
    if parameters > MAX_PARAMETERS:
        raise ConfigError(
            [f"these sizes give {parameters:,} parameters, more than the {MAX_PARAMETERS:,} mltk builds"],
            source=f"architecture {arch!r}",
            hint="lower width, depth, num_classes or image_size",
        )
    if device is not None and torch.device(device) == META:
        return skeleton
    return assemble()


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _shape_problems(shape: dict[str, object]) -> list[str]:
    problems = []
    for key, value in shape.items():
        if not _is_positive_int(value):
            problems.append(f"{key} must be a positive int, got {_bounded(value)}")
        elif value > MAX_SHAPE[key]:
            problems.append(f"{key} must be at most {MAX_SHAPE[key]:,}, got {value:,}")
    return problems


def _bounded(value: object) -> str:
    # A value from a card may be anything, a huge string or list included.
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _option_problems(entry: ArchEntry, options: dict) -> list[str]:
    """Every unknown option, wrongly typed value, value above its maximum and value outside its choices."""
    valid = list(entry.defaults)
    problems = []
    for option, value in options.items():
        if option not in entry.defaults:
            nearest = difflib.get_close_matches(option, valid, n=1)
            guess = f" (did you mean {nearest[0]!r}?)" if nearest else ""
            known = f"valid options: {', '.join(valid)}" if valid else f"{entry.name} takes none"
            problems.append(f"unknown option {_bounded(option)}{guess}; {known}")
        elif not _has_type_of(value, entry.defaults[option]):
            expected = type(entry.defaults[option]).__name__
            problems.append(f"option {option!r} must be {expected}, got {_bounded(value)}")
        elif option in entry.maxima and value > entry.maxima[option]:
            problems.append(f"option {option!r} must be at most {entry.maxima[option]:,}, got {value:,}")
        elif option in entry.choices and value not in entry.choices[option]:
            allowed = entry.choices[option]
            nearest = difflib.get_close_matches(str(value), [str(v) for v in allowed], n=1)
            guess = f" (did you mean {nearest[0]!r}?)" if nearest else ""
            problems.append(
                f"option {option!r} must be one of {list(allowed)}, got {_bounded(value)}{guess}"
            )
    return problems


def _has_type_of(value: object, default: object) -> bool:
    # bool is an int subclass, and an int is a fine float: check by hand.
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, type(default))


def _canonical(entry: ArchEntry, options: dict) -> dict:
    # width_mult=1 and width_mult=1.0 must give the same spec.
    return {
        option: float(value) if isinstance(entry.defaults[option], float) else value
        for option, value in options.items()
    }


def _channel_stats(
    name: str, values: Sequence[float] | None, channels: int | None, *, positive: bool
) -> tuple[list[float], list[str]]:
    """(per-channel values, problems); ``None`` means 0.5 for every channel."""
    if values is None:
        return [DEFAULT_CHANNEL_STAT] * (channels or 1), []
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        return [], [f"{name} must be a list of numbers, one per channel, got {values!r}"]
    if not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        return [], [f"{name} must hold finite numbers, got {list(values)!r}"]
    problems = []
    if channels is not None and len(values) != channels:
        problems.append(
            f"{name} needs {channels} values (one per input channel), got {len(values)}"
        )
    if positive and any(v <= 0 for v in values):
        problems.append(f"{name} must be positive in every channel, got {list(values)!r}")
    return [float(v) for v in values], problems
