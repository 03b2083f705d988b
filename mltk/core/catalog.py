"""The names users type: recipes (``mltk train <recipe>``), evaluation protocols
(``mltk eval --protocol <name>``) and the YAML presets shipped with each recipe.

Engines register themselves with decorators when they are imported. This
module never imports them (nothing below ``mltk.engines`` may): the top
package ``mltk`` gives it a loader (:func:`set_engine_loader`) that imports
``mltk.engines`` on the first lookup, so adding an engine touches neither
``core`` nor the CLI.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from mltk.core.errors import UsageError

C = TypeVar("C")
D = TypeVar("D")


@dataclasses.dataclass(frozen=True)
class RecipeEntry:
    name: str
    description: str
    config_class: type
    recipe_class: type
    default_preset: str

    def presets(self) -> list[str]:
        return preset_names(self.name)


@dataclasses.dataclass(frozen=True)
class EvalRequest:
    """What ``mltk eval`` passes to a protocol.

    ``options`` holds the protocol's own settings, given on the command line as
    ``--runs 5`` or ``runs=5``; a protocol reads them with :meth:`parse_options`.
    """

    ref: str
    protocol: str = "accuracy"
    data: str | None = None
    data_dir: str | None = None
    download: bool = False  # fetch missing official dataset files
    split: str = "test"
    batch_size: int = 512
    device: str = "auto"
    options: dict = dataclasses.field(default_factory=dict)

    def located(self, spec: D) -> D:
        """A protocol's data spec (any dataclass with ``data_dir`` and ``download``) read where --data-dir
        and --download say."""
        if self.data_dir:
            spec = dataclasses.replace(spec, data_dir=self.data_dir)
        if self.download:
            spec = dataclasses.replace(spec, download=True)
        return spec

    def parse_options(self, cls: type[C]) -> C:
        """``options`` checked against the dataclass ``cls``: every unknown or mistyped one is a ConfigError."""
        from mltk.core.config import build

        names = [f.name for f in dataclasses.fields(cls)]
        hint = (f"options of --protocol {self.protocol}: " + ", ".join(f"--{n.replace('_', '-')}" for n in names)
                if names else f"--protocol {self.protocol} takes no options of its own")
        return build(cls, self.options, source=f"--protocol {self.protocol}", hint=hint)


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation; ``primary`` names the one ``--min`` applies to by default."""

    metrics: dict[str, float]
    primary: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ProtocolEntry:
    name: str
    description: str
    run: Callable[..., EvalResult]


_RECIPES: dict[str, RecipeEntry] = {}
_PROTOCOLS: dict[str, ProtocolEntry] = {}


def register_recipe(name: str, *, config: type, description: str, default_preset: str):
    """Class decorator: ``recipe_class(cfg, ctx)`` with setup/train/evaluate/save."""

    def wrap(cls: type) -> type:
        if name in _RECIPES and _RECIPES[name].recipe_class is not cls:
            raise RuntimeError(f"recipe {name!r} registered twice")
        _RECIPES[name] = RecipeEntry(name, description, config, cls, default_preset)
        return cls

    return wrap


def register_protocol(name: str, *, description: str):
    """Function decorator: ``fn(request: EvalRequest, reporter) -> EvalResult``."""

    def wrap(fn: Callable[..., EvalResult]) -> Callable[..., EvalResult]:
        _PROTOCOLS[name] = ProtocolEntry(name, description, fn)
        return fn

    return wrap


_engine_loader: Callable[[], None] | None = None


def set_engine_loader(loader: Callable[[], None]) -> None:
    """What imports the engines (and so registers them) before the first lookup."""
    global _engine_loader
    _engine_loader = loader


def _load_engines() -> None:
    if _engine_loader is not None:
        _engine_loader()


def recipes() -> list[RecipeEntry]:
    _load_engines()
    return [_RECIPES[k] for k in sorted(_RECIPES)]


def protocols() -> list[ProtocolEntry]:
    _load_engines()
    return [_PROTOCOLS[k] for k in sorted(_PROTOCOLS)]


def get_recipe(name: str) -> RecipeEntry:
    _load_engines()
    if name not in _RECIPES:
        raise UsageError(f"unknown recipe {name!r}{_nearest(name, _RECIPES)}",
                         hint=f"recipes: {', '.join(sorted(_RECIPES))} (see `mltk recipes`)")
    return _RECIPES[name]


def get_protocol(name: str) -> ProtocolEntry:
    _load_engines()
    if name not in _PROTOCOLS:
        raise UsageError(f"unknown protocol {name!r}{_nearest(name, _PROTOCOLS)}",
                         hint=f"protocols: {', '.join(sorted(_PROTOCOLS))}")
    return _PROTOCOLS[name]


def _nearest(name: str, known) -> str:
    near = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean '{near[0]}'?" if near else ""


# ---------------------------------------------------------------- presets


def preset_names(recipe: str) -> list[str]:
    folder = resources.files("mltk.presets") / recipe
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_path(recipe: str, preset: str) -> Path:
    """The shipped YAML file of ``recipe``'s ``preset``."""
    names = preset_names(recipe)
    if preset not in names:
        raise UsageError(f"recipe {recipe!r} has no preset {preset!r}{_nearest(preset, names)}",
                         hint=f"presets: {', '.join(names) or 'none'}")
    return Path(str(resources.files("mltk.presets") / recipe / f"{preset}.yaml"))


def parse_preset_ref(ref: str) -> tuple[str, str]:
    """``supervised/cifar10`` -> (supervised, cifar10); ``supervised`` -> its default preset."""
    recipe_name, _, preset = ref.partition("/")
    entry = get_recipe(recipe_name)
    return entry.name, preset or entry.default_preset
