"""Every artifact's card has one spine, built in one place; its weights files carry the lineage too; and
every artifact, a registry reference, an exported folder or a lone weights file, is read back through
one verified door."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from mltk import __version__
from mltk.core.artifact import build_card, card_from_provenance, open_artifact, provenance
from mltk.core.config import config_hash, to_dict
from mltk.core.errors import ArtifactError
from mltk.core.registry import Registry
from mltk.core.tensor_files import safetensors_bytes


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
                      relation="r", higher_is_better=False)
    assert "primary_metric" not in card and card["config"] == {"a": 1} and card["config_sha256"] == "abc"


def test_provenance_is_string_metadata_with_the_lineage_and_reads_back_as_a_card():
    meta = provenance(engine="quantize", parent="fp:1", relation="quantized", kind="binarized-classifier",
                      arch={"name": "convnet"}, format="pt")
    assert meta == {"mltk_version": __version__, "engine": "quantize", "parent": "fp:1", "relation": "quantized",
                    "kind": "binarized-classifier", "arch": '{"name": "convnet"}', "format": "pt"}
    assert card_from_provenance(meta) == {
        "kind": "binarized-classifier", "engine": "quantize", "lineage": {"parent": "fp:1", "relation": "quantized"},
        "mltk_version": __version__, "arch": {"name": "convnet"}, "format": "pt"}


# ---------------------------------------------------------------- reading


def _weights(value: float) -> bytes:
    meta = provenance(engine="test", parent="dataset:digits", relation="trained", arch={"name": "tiny"})
    return safetensors_bytes({"w": torch.full((4,), value)}, meta)


def _save(registry: Registry, accuracy: float, kind: str = "classifier"):
    card = build_card(kind=kind, engine="test", config=Cfg(), metrics={"test_accuracy": accuracy},
                      primary_metric="test_accuracy", parent="dataset:digits", relation="trained",
                      arch={"name": "tiny"})
    return registry.save("tiny", files={"model.safetensors": _weights(accuracy), "notes.txt": b"hello"}, card=card)


@pytest.fixture
def registry(tmp_path) -> Registry:
    registry = Registry(tmp_path / "home")
    for accuracy in (0.5, 0.9, 0.7):
        _save(registry, accuracy)
    registry.set_alias("tiny:1", "first")
    return registry


@pytest.mark.parametrize(("ref", "version"), [("tiny", 3), ("tiny:2", 2), ("tiny@best", 2), ("tiny@latest", 3),
                                              ("tiny@first", 1)])
def test_every_kind_of_registry_reference_opens_its_version(registry, ref, version):
    opened = open_artifact(ref, registry=registry, kinds=("classifier",))
    assert opened.source == f"tiny:{version}" and opened.card["version"] == version
    assert opened.path == registry.artifacts_dir / "tiny" / str(version)
    assert opened.files() == {name: opened.path / name for name in ("model.safetensors", "notes.txt")}


def test_an_exported_folder_opens_like_its_registry_reference(registry, tmp_path):
    folder = tmp_path / "exported"
    registry.export("tiny:2", folder)
    by_ref, by_folder = open_artifact("tiny:2", registry=registry), open_artifact(str(folder))
    assert by_folder.card == by_ref.card and by_folder.source == str(folder)
    assert by_folder.file("model.safetensors") == folder / "model.safetensors"
    assert by_folder.file("model.safetensors").read_bytes() == by_ref.file("model.safetensors").read_bytes()


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def test_a_flipped_byte_is_an_exit_3_error_naming_the_file(registry, tmp_path):
    folder = tmp_path / "exported"
    registry.export("tiny:2", folder)
    _flip_last_byte(folder / "notes.txt")
    opened = open_artifact(str(folder))  # the card is fine; the file is checked when it is asked for
    with pytest.raises(ArtifactError, match=r"exported: notes\.txt does not match its recorded sha256") as info:
        opened.files()
    assert info.value.exit_code == 3 and "export the artifact again" in info.value.hint
    assert opened.file("model.safetensors") == folder / "model.safetensors"

    _flip_last_byte(registry.resolve("tiny:1").path / "model.safetensors")
    with pytest.raises(ArtifactError, match=r"tiny:1: model\.safetensors does not match its recorded sha256") as info:
        open_artifact("tiny@first", registry=registry).file("model.safetensors")
    assert "mltk verify tiny:1" in info.value.hint


def test_a_missing_file_and_an_edited_registry_card_are_errors(registry):
    record = registry.resolve("tiny:3")
    (record.path / "notes.txt").unlink()
    with pytest.raises(ArtifactError, match=r"tiny:3: notes\.txt is missing"):
        open_artifact("tiny", registry=registry).files()
    with pytest.raises(ArtifactError, match="has no file 'other.bin'"):
        open_artifact("tiny", registry=registry).file("other.bin")
    record.card_path.write_text(record.card_path.read_text().replace('"trained"', '"distilled"'))
    with pytest.raises(ArtifactError, match="card.json changed after it was saved"):
        open_artifact("tiny", registry=registry)


def test_a_wrong_kind_names_what_was_expected(registry, tmp_path):
    with pytest.raises(ArtifactError, match=r"tiny:3: is a 'classifier' artifact, not a condensed-dataset or "
                                            r"encoder") as info:
        open_artifact("tiny", registry=registry, kinds=("condensed-dataset", "encoder"),
                      kind_hint="make one with `mltk condense`")
    assert info.value.exit_code == 3 and info.value.hint == "make one with `mltk condense`"


def test_a_broken_exported_card_and_a_missing_folder_are_exit_3_errors(registry, tmp_path):
    folder = tmp_path / "exported"
    registry.export("tiny", folder)
    for broken in ("{not json", "[1, 2]", '{"files": 3}'):
        (folder / "card.json").write_text(broken)
        with pytest.raises(ArtifactError, match="card.json: not"):
            open_artifact(str(folder))
    (folder / "card.json").unlink()
    with pytest.raises(ArtifactError, match=r"not an mltk artifact folder \(no card.json\)"):
        open_artifact(str(folder))
    assert open_artifact(str(folder), plain_folders=True).card == {}
    with pytest.raises(ArtifactError, match="no such file or folder"):
        open_artifact(str(tmp_path / "missing"))


def test_a_lone_weights_file_opens_with_the_card_its_metadata_holds(tmp_path):
    lone = tmp_path / "weights.safetensors"
    lone.write_bytes(_weights(0.5))
    opened = open_artifact(str(lone), lone_files=True)
    assert opened.lone_file and opened.source == str(lone) and "kind" not in opened.card  # as a plain classifier's
    assert opened.card["arch"] == {"name": "tiny"} and opened.card["lineage"]["relation"] == "trained"
    assert opened.file("model.safetensors") == lone and opened.files() == {"model.safetensors": lone}
    with pytest.raises(ArtifactError, match="a lone weights file holds no student.safetensors"):
        opened.file("student.safetensors")
    with pytest.raises(ArtifactError, match="a lone file, not an artifact folder"):
        open_artifact(str(lone))  # a reader that needs the whole artifact
