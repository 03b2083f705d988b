"""What every artifact says about itself, built in one place, and every artifact read back verified.

An artifact is its files plus ``card.json``. Every kind's card has the same
spine, then the kind's own sections (``arch``, ``task``, ``quantization``,
...)::

    kind, engine, <sections>, parameters, metrics, primary_metric {name, higher_is_better},
    lineage {parent, relation}, config, config_sha256

and every weights file carries a small copy of the lineage in its
safetensors metadata (``provenance``), so a file separated from its card
still says where it came from. The registry adds the files' sha256 to the
card when it saves; ``open_artifact`` reads a registry reference or an
exported folder the same way and hands out only files that match them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mltk import __version__
from mltk.core.config import config_hash, to_dict
from mltk.core.errors import ArtifactError
from mltk.core.registry import CARD_FILE, Registry, sha256_file


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


# ---------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True)
class OpenedArtifact:
    """An artifact's card and its files, each checked against the card's sha256 when it is asked for."""

    card: dict
    source: str  # how messages name it: the registry reference or the folder
    read: Callable[[str], Path]

    def file(self, name: str) -> Path:
        return self.read(name)

    def verify_files(self) -> None:
        for name in self.card.get("files", {}):
            self.read(name)


def open_artifact(ref: str, *, registry: Registry | None = None, kinds: tuple[str, ...] | None = None,
                  kind_hint: str | None = None, plain_folders: bool = False) -> OpenedArtifact:
    """The artifact ``ref`` names: a registry reference (``name``, ``name:3``, ``name@best``) or a folder that
    ``mltk export`` wrote. The card is verified; with ``kinds`` its kind must be one of them (else an
    error with ``kind_hint`` as the next step). With
    ``plain_folders``, a folder without a card (a Hugging Face model folder) opens with an empty card."""
    path = Path(ref).expanduser()
    if path.is_dir():
        opened = _open_folder(path, plain_folders)
    elif "/" in ref or ref.startswith("."):
        raise ArtifactError(f"{ref}: no such artifact folder",
                            hint="give a registry reference (see `mltk ls`) or a folder written by `mltk export`")
    else:
        record = (registry or Registry()).resolve(ref)
        opened = OpenedArtifact(record.card(verify=True), record.ref, record.file)
    if kinds is not None and opened.card.get("kind") not in kinds:
        raise ArtifactError(f"{opened.source}: is a {opened.card.get('kind') or 'unknown'!r} artifact, "
                            f"not a {' or '.join(kinds)}", hint=kind_hint)
    return opened


def _open_folder(folder: Path, plain_folders: bool) -> OpenedArtifact:
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        if plain_folders:
            return OpenedArtifact({}, str(folder), lambda name: folder / name)
        raise ArtifactError(f"{folder}: not an mltk artifact folder (no {CARD_FILE})",
                            hint="give a registry reference (see `mltk ls`) or a folder written by `mltk export`")
    try:
        card = json.loads(card_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArtifactError(f"{card_path}: not valid JSON", hint="export the artifact again") from None
    if not isinstance(card, dict) or not isinstance(card.get("files", {}), dict):
        raise ArtifactError(f"{card_path}: not an mltk card (expected an object with a files mapping)",
                            hint="export the artifact again")

    def read(name: str) -> Path:
        entry = card.get("files", {}).get(name)
        path = folder / name
        if not isinstance(entry, dict) or not path.is_file():
            raise ArtifactError(f"{folder}: {name} is missing", hint="export the artifact again")
        if sha256_file(path) != entry.get("sha256"):
            raise ArtifactError(f"{path}: does not match the sha256 in {CARD_FILE}",
                                hint="the file changed or is incomplete; export the artifact again")
        return path

    return OpenedArtifact(card, str(folder), read)
