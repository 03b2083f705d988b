"""Every artifact's card has one spine, built in one place; its weights files carry the lineage too."""

from __future__ import annotations

import dataclasses
import json

from mltk import __version__
from mltk.core.artifact import build_card, provenance
from mltk.core.config import config_hash, to_dict


@dataclasses.dataclass(frozen=True)
class Cfg:
    seed: int = 3


def test_the_card_spine_and_a_kinds_own_sections():
    card = build_card(kind="classifier", engine="supervised", config=Cfg(), metrics={"test_accuracy": 0.9},
                      parent="dataset:digits", relation="trained", primary_metric="test_accuracy",
                      parameters=10, arch={"name": "convnet"})
    assert card == {"kind": "classifier", "engine": "supervised", "arch": {"name": "convnet"}, "parameters": 10,
                    "metrics": {"test_accuracy": 0.9},
                    "primary_metric": {"name": "test_accuracy", "higher_is_better": True},
                    "lineage": {"parent": "dataset:digits", "relation": "trained"},
                    "config": to_dict(Cfg()), "config_sha256": config_hash(Cfg())}
    json.dumps(card)  # a card is plain JSON


def test_a_card_without_a_primary_metric_names_none():
    card = build_card(kind="k", engine="e", config={"a": 1}, config_sha256="abc", metrics={}, parent="p",
                      relation="r")
    assert "primary_metric" not in card and card["config"] == {"a": 1} and card["config_sha256"] == "abc"


def test_provenance_is_string_metadata_with_the_lineage():
    meta = provenance(engine="quantize", parent="fp:1", relation="quantized", arch={"name": "convnet"}, format="pt")
    assert meta == {"mltk_version": __version__, "engine": "quantize", "parent": "fp:1", "relation": "quantized",
                    "arch": '{"name": "convnet"}', "format": "pt"}
