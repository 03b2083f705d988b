"""What every artifact says about itself, built in one place.

An artifact is its files plus ``card.json``. Every kind's card has the same
spine, then the kind's own sections (``arch``, ``task``, ``quantization``,
...)::

    kind, engine, <sections>, parameters, metrics, primary_metric {name, higher_is_better},
    lineage {parent, relation}, config, config_sha256

and every weights file carries a small copy of the lineage in its
safetensors metadata (``provenance``), so a file separated from its card
still says where it came from. The registry adds the files' sha256 to the
card when it saves.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from mltk import __version__
from mltk.core.config import config_hash, to_dict


def build_card(*, kind: str, engine: str, config: Any, metrics: dict, parent: str, relation: str,
               primary_metric: str | None = None, higher_is_better: bool = True, parameters: int | None = None,
               config_sha256: str | None = None, **sections: Any) -> dict:
    """The card of an artifact; ``config`` is the run's config dataclass (or its plain dict with its hash)."""
    if dataclasses.is_dataclass(config):
        config, config_sha256 = to_dict(config), config_hash(config)
    card = {"kind": kind, "engine": engine, **sections}
    if parameters is not None:
        card["parameters"] = parameters
    card["metrics"] = metrics
    if primary_metric is not None:
        card["primary_metric"] = {"name": primary_metric, "higher_is_better": higher_is_better}
    card["lineage"] = {"parent": parent, "relation": relation}
    card["config"] = config
    card["config_sha256"] = config_sha256 or ""
    return card


def provenance(*, engine: str, parent: str, relation: str, **more: Any) -> dict[str, str]:
    """The safetensors metadata of a weights file: version, engine, lineage and ``more`` (JSON unless a string)."""
    return {"mltk_version": __version__, "engine": engine, "parent": parent, "relation": relation,
            **{key: value if isinstance(value, str) else json.dumps(value) for key, value in more.items()}}
