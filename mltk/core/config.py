"""Typed recipe configs: dataclass defaults < preset < --config FILE < key=value.

A recipe's config is a frozen dataclass whose fields are scalars, lists,
``X | None``, ``Literal[...]``, free-form ``dict`` or nested dataclasses
(sections, addressed with dotted keys: ``optim.lr=0.1``). Every layer is a
plain nested dict; they are merged in order, then checked against the
dataclass in one pass that collects every problem (unknown key with the
nearest valid one, wrong type, a value outside a section's range) before
raising a single ``ConfigError``.

A section that has a ``name`` field also takes a bare value: ``data=cifar10``
means ``data.name=cifar10``, which is what people type.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from mltk.core.errors import ConfigError

C = TypeVar("C")


# ---------------------------------------------------------------- reading layers

# A config is a few hundred values; one whose aliases expand past this is an alias bomb, not a config.
MAX_EXPANDED_NODES = 100_000
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 3, 6, 6, 80, 80


def _shown(value: Any) -> str:
    """A value as an error message shows it: bounded, however large or deeply shared the value is."""
    return _SHORT.repr(value)


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML itself keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {_shown(key)} is given twice (first on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(value: Any) -> int:
    """How many values ``value`` holds with every YAML alias expanded (shared objects counted each time)."""
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        if id(node) not in sizes:
            sizes[id(node)] = 0  # a cycle counts once
            children = node.values() if isinstance(node, dict) else node
            sizes[id(node)] = min(1 + sum(size(child) for child in children), MAX_EXPANDED_NODES + 1)
        return sizes[id(node)]

    return size(value)


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from ``path``; a missing file or a non-mapping is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: no such file"], source="--config",
                          hint="check the path, or list presets with `mltk recipes`")
    try:
        data = yaml.load(path.read_text(), Loader=_StrictLoader)  # noqa: S506 (a safe loader)
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not a text file"], source="--config",
                          hint="give a YAML file of keys and values") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError([f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})"],
                          source="--config") from None
    if _expanded_size(data) > MAX_EXPANDED_NODES:
        raise ConfigError([f"{path}: its aliases expand to more than {MAX_EXPANDED_NODES} values"],
                          source="--config", hint="a config holds keys and values; write them out")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping of keys to values, got {type(data).__name__}"],
                          source="--config")
    return data


def parse_overrides(items: list[str]) -> dict:
    """``["optim.lr=0.1", "data=cifar10"]`` -> ``{"optim": {"lr": 0.1}, "data": "cifar10"}``.

    Values are read as YAML scalars or lists (``epochs=3`` is an int,
    ``mean=[0.5,0.5]`` a list, ``name=null`` None); anything YAML cannot read
    stays a string.
    """
    tree: dict = {}
    problems = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(f"'{item}' is not key=value (example: optim.lr=0.01)")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if _expanded_size(value) > MAX_EXPANDED_NODES:
            problems.append(f"{key}: its value's aliases expand to more than {MAX_EXPANDED_NODES} values")
            continue
        _set_dotted(tree, key.split("."), value)
    if problems:
        raise ConfigError(problems, source="overrides")
    return tree


def _set_dotted(tree: dict, parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        child = tree.get(part)
        if not isinstance(child, dict):
            child = {} if child is None else {"name": child}
            tree[part] = child
        tree = child
    last = parts[-1]
    if isinstance(tree.get(last), dict) and not isinstance(value, dict):
        tree[last]["name"] = value
    else:
        tree[last] = value


def merge(base: dict, layer: dict) -> dict:
    """A new dict: ``layer`` over ``base``, recursing into sections."""
    out = dict(base)
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif isinstance(out.get(key), dict) and not isinstance(value, dict) and value is not None:
            out[key] = merge(out[key], {"name": value})
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------- building the dataclass


def build(cls: type[C], tree: dict, source: str = "config",
          hint: str = "see every key and its default with `mltk cp <recipe> my.yaml`") -> C:
    """An instance of ``cls`` from ``tree``, or a ConfigError listing every problem."""
    problems: list[str] = []
    instance = _build_section(cls, tree, "", problems)
    if problems:
        raise ConfigError(problems, source=source, hint=hint)
    return instance


def _build_section(cls: type, tree: Any, prefix: str, problems: list[str]) -> Any:
    if not isinstance(tree, dict):
        if _has_name_field(cls):
            tree = {"name": tree}
        else:
            problems.append(f"{prefix.rstrip('.')}: is a section, expected a mapping, got {_shown(tree)}")
            return None
    problems_before = len(problems)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in tree:
        if key not in fields:
            problems.append(_unknown_key(prefix + str(key), list(fields), prefix))
    kwargs = {}
    for name, field in fields.items():
        path = prefix + name
        if name in tree:
            kwargs[name] = _convert(hints[name], tree[name], path, problems)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            problems.append(f"{path}: required, no value given")
    if len(problems) > problems_before:
        return None
    try:
        instance = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        problems.append(f"{prefix.rstrip('.') or cls.__name__}: {exc}")
        return None
    # A section may also check its values' ranges (see mltk.core.sections).
    check = getattr(instance, "value_problems", None)
    if callable(check):
        problems.extend(prefix + problem for problem in check())
    return instance


def _unknown_key(path: str, valid: list[str], prefix: str) -> str:
    leaf = path[len(prefix):]
    near = difflib.get_close_matches(leaf, valid, n=1, cutoff=0.5)
    suggestion = f"; did you mean '{prefix}{near[0]}'?" if near else ""
    listing = f"valid: {', '.join(prefix + v for v in valid)}" if valid else "no keys are valid here"
    return f"{path}: unknown key{suggestion} ({listing})"


def _has_name_field(cls: type) -> bool:
    return dataclasses.is_dataclass(cls) and any(f.name == "name" for f in dataclasses.fields(cls))


def _convert(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    """``value`` checked against (and, for numbers written as strings, converted to) ``tp``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build_section(tp, value, path + ".", problems)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            trial: list[str] = []
            converted = _convert(option, value, path, trial)
            if not trial:
                return converted
        problems.append(f"{path}: expected {_type_name(tp)}, got {_shown(value)}")
        return None
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        problems.append(f"{path}: {_shown(value)} is not one of {', '.join(map(str, choices))}{hint}")
        return None
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            problems.append(f"{path}: expected a list, got {_shown(value)}")
            return None
        args = typing.get_args(tp)
        item_type = args[0] if args else Any
        items = [_convert(item_type, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {_shown(value)}")
            return None
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{path}: expected true or false, got {_shown(value)}")
        return None
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        problems.append(f"{path}: expected an integer, got {_shown(value)}")
        return None
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
        problems.append(f"{path}: expected a number, got {_shown(value)}")
        return None
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        problems.append(f"{path}: expected a string, got {_shown(value)}")
        return None
    raise TypeError(f"config field {path} has a type mltk cannot check: {tp!r}")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(t) for t in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


# ---------------------------------------------------------------- the whole resolution


def resolve(cls: type[C], *, preset: Path | None = None, config_file: Path | None = None,
            overrides: list[str] | tuple[str, ...] = ()) -> C:
    """The config a run uses: dataclass defaults < preset < config file < overrides."""
    tree: dict = {}
    if preset is not None:
        tree = merge(tree, read_yaml(preset))
    if config_file is not None:
        tree = merge(tree, read_yaml(config_file))
    tree = merge(tree, parse_overrides(list(overrides)))
    return build(cls, tree)


def to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config (tuples become lists), ready for YAML or JSON."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def to_yaml(cfg: Any, header: str = "") -> str:
    body = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
    return header + body


def config_hash(cfg: Any, ignore: tuple[str, ...] = ()) -> str:
    """sha256 of the canonical JSON of ``cfg`` without the top-level keys in ``ignore``."""
    data = {k: v for k, v in to_dict(cfg).items() if k not in ignore}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
