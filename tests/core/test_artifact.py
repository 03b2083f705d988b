"""Every artifact's card has one spine, built in one place; its weights files carry the lineage too; and
every artifact, a registry reference or an exported folder, is read back through one verified door."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mltk import __version__
from mltk.core.artifact import build_card, open_artifact, provenance
from mltk.core.config import config_hash, to_dict
from mltk.core.errors import ArtifactError


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


def _exported(tmp_path, cli, tiny) -> Path:
    trained = cli("train", "supervised", *tiny, "train.max_steps=2", "--format", "json")
    assert trained.code == 0, trained.stderr
    out = tmp_path / "exported"
    assert cli("export", trained.json()["artifact"], "-o", str(out)).code == 0
    return out


def test_a_registry_reference_and_its_exported_folder_open_the_same(tmp_path, cli, tiny):
    folder = _exported(tmp_path, cli, tiny)
    by_ref = open_artifact("convnet-digits")
    by_folder = open_artifact(str(folder), kinds=("classifier",))
    assert by_ref.card == by_folder.card and by_ref.source == "convnet-digits:1"
    assert by_folder.file("model.safetensors") == folder / "model.safetensors"


def test_a_changed_file_a_broken_card_and_a_wrong_kind_are_exit_3_errors(tmp_path, cli, tiny):
    folder = _exported(tmp_path, cli, tiny)
    with pytest.raises(ArtifactError, match="not a condensed-dataset") as info:
        open_artifact(str(folder), kinds=("condensed-dataset",), kind_hint="use mltk condense")
    assert info.value.hint == "use mltk condense"
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.safetensors: does not match the sha256"):
        open_artifact(str(folder)).file("model.safetensors")
    for broken in ("{not json", "[1, 2]", '{"files": 3}'):
        (folder / "card.json").write_text(broken)
        with pytest.raises(ArtifactError, match="card.json: not"):
            open_artifact(str(folder))
    with pytest.raises(ArtifactError, match="no such artifact folder"):
        open_artifact(str(tmp_path / "missing"))
