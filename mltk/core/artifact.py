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
exported folder the same way and hands out only files that match them (both
through ``registry.checked_file``). A lone weights file opens with the card
its metadata holds, where a reader can do with that.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mltk.core.config import config_hash, to_dict
from mltk.core.errors import ArtifactError
from mltk.core.registry import CARD_FILE, Registry, checked_file
from mltk.core.tensor_files import read_safetensors_metadata
from mltk.core.version import __version__


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


WEIGHTS_FILE = "model.safetensors"
# What a reference that names a file ends in: mltk's weights, or a foreign state_dict.
FOREIGN_SUFFIXES = (".pt", ".pth", ".th", ".bin", ".ckpt")
FILE_SUFFIXES = (".safetensors", *FOREIGN_SUFFIXES)
_WHERE_HINT = "give a registry reference (see `mltk ls`), a folder written by `mltk export` or an mltk .safetensors file"
_EXPORT_AGAIN = "the file changed or is incomplete; export the artifact again"


def names_a_path(ref: str) -> bool:
    """Whether ``ref`` names something on disk rather than a registry artifact (names have no '/' nor a leading dot)."""
    path = Path(ref).expanduser()
    return path.exists() or "/" in ref or ref.startswith(".") or path.suffix in FILE_SUFFIXES


def card_from_provenance(metadata: dict[str, str], where: str = "weights file") -> dict:
    """The card a lone weights file carries in its metadata: :func:`provenance` read back.

    ``kind`` and ``engine`` stay on top, ``parent`` and ``relation`` become the
    lineage, and the JSON sections (``arch``, ``task``, ...) are decoded. There
    are no ``files`` to check: the file is all there is.
    """
    fields = {}
    for key, value in metadata.items():
        if value.startswith(("{", "[")):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ArtifactError(f"{where}: its metadata field {key[:80]!r} is not valid JSON",
                                    hint="the file is damaged or was not written by mltk") from None
        fields[key] = value
    card = {key: fields.pop(key) for key in ("kind", "engine") if key in fields}
    lineage = {key: fields.pop(key) for key in ("parent", "relation") if key in fields}
    return {**card, **({"lineage": lineage} if lineage else {}), **fields}


@dataclasses.dataclass(frozen=True)
class OpenedArtifact:
    """An artifact's card and its files, each checked against the card's sha256 when it is asked for.

    ``path`` is the artifact's folder, or the file itself for a lone weights
    file; ``source`` names it in messages (the registry reference ``name:3`` or
    the path). A plain folder (no card) has ``card == {}`` and unchecked files.
    """

    path: Path
    card: dict
    source: str
    hint: str | None = None  # the next step when a file does not match the card
    checked: bool = True

    @property
    def lone_file(self) -> bool:
        return self.path.is_file()

    def file(self, name: str) -> Path:
        if self.lone_file:
            if name != WEIGHTS_FILE:
                raise ArtifactError(f"{self.source}: a lone weights file holds no {name}",
                                    hint="give the artifact's registry reference or its exported folder")
            return self.path
        if not self.checked:
            return self.path / name
        return checked_file(self.path, self.card.get("files", {}), name, where=self.source, hint=self.hint)

    def files(self) -> dict[str, Path]:
        """Every file the card lists, each checked: the whole artifact, for readers that hand a folder on."""
        if self.lone_file:
            return {WEIGHTS_FILE: self.path}
        return {name: self.file(name) for name in self.card.get("files", {})}


def open_artifact(ref: str, *, registry: Registry | None = None, kinds: tuple[str, ...] | None = None,
                  kind_hint: str | None = None, plain_folders: bool = False,
                  lone_files: bool = False) -> OpenedArtifact:
    """The artifact ``ref`` names: a registry reference (``name``, ``name:3``, ``name@best``, ``name@alias``)
    or a folder that ``mltk export`` wrote; the card is verified (a registry card against the index).

    With ``kinds`` its kind must be one of them (else an error with ``kind_hint``
    as the next step). With ``plain_folders`` a folder without a card (a Hugging
    Face model folder) opens with an empty card; with ``lone_files`` an mltk
    ``.safetensors`` file opens with the card its metadata holds.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        opened = _open_folder(path, plain_folders)
    elif path.is_file() and lone_files:
        opened = OpenedArtifact(path, card_from_provenance(read_safetensors_metadata(path), str(path)), str(path))
    elif path.is_file():
        raise ArtifactError(f"{ref}: a lone file, not an artifact folder",
                            hint="give the artifact's registry reference or the folder `mltk export` wrote")
    elif names_a_path(ref):
        raise ArtifactError(f"{ref}: no such file or folder", hint=_WHERE_HINT)
    else:
        record = (registry or Registry()).resolve(ref)
        opened = OpenedArtifact(record.path, record.card(verify=True), record.ref, record.damaged_hint)
    if kinds is not None and opened.card.get("kind") not in kinds:
        raise ArtifactError(f"{opened.source}: is a {opened.card.get('kind') or 'unknown'!r} artifact, "
                            f"not a {' or '.join(kinds)}", hint=kind_hint)
    return opened


def _open_folder(folder: Path, plain_folders: bool) -> OpenedArtifact:
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        if plain_folders:
            return OpenedArtifact(folder, {}, str(folder), checked=False)
        raise ArtifactError(f"{folder}: not an mltk artifact folder (no {CARD_FILE})", hint=_WHERE_HINT)
    try:
        card = json.loads(card_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArtifactError(f"{card_path}: not valid JSON", hint="export the artifact again") from None
    if not isinstance(card, dict) or not isinstance(card.get("files", {}), dict):
        raise ArtifactError(f"{card_path}: not an mltk card (expected an object with a files mapping)",
                            hint="export the artifact again")
    return OpenedArtifact(folder, card, str(folder), _EXPORT_AGAIN)
