"""The artifact registry: named, versioned, hashed files under ``$MLTK_HOME``.

Layout::

    $MLTK_HOME/registry.db                 SQLite index (WAL): names, versions, aliases
    $MLTK_HOME/artifacts/<name>/<version>/ model.safetensors, card.json, other files
    $MLTK_HOME/tmp/                        saves in progress (never visible)

An artifact is a folder of files plus ``card.json``: what it is (engine, kind,
architecture), how it was made (config, lineage ``parent`` + ``relation``),
what it scored (``metrics``) and the sha256 and size of every file. The index
holds the sha256 of the card itself, so ``verify`` catches an edited card too.

References: ``name`` (the latest version), ``name:3`` (version 3),
``name@best`` (the version with the best primary metric), ``name@latest``, or
``name@<alias>`` for an alias set with :meth:`Registry.set_alias`.

Saves are atomic: files are written and fsynced in a private temporary folder,
then, holding the index's write lock, the next version number is taken, the
folder renamed into place and the index row committed. A crash or a full disk
at any point leaves no visible artifact; two processes saving the same name get
two versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import difflib
import errno
import hashlib
import json
import os
import re
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mltk.core.errors import ArtifactError, MltkError, UsageError
from mltk.core.paths import mltk_home
from mltk.core.tensor_files import fsync_dir, write_file
from mltk.core.version import __version__

WRITER_WAIT_S = 60  # how long a writer waits for another process's hold on the index

CARD_FILE = "card.json"
CARD_FORMAT = "mltk-artifact/1"
COMPUTED_ALIASES = ("latest", "best")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_REF_RE = re.compile(r"^(?P<name>[^:@]+)(?::(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_.-]+))?$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    created TEXT NOT NULL,
    kind TEXT NOT NULL,
    engine TEXT NOT NULL,
    relation TEXT,
    parent TEXT,
    card_sha256 TEXT NOT NULL,
    metric_name TEXT,
    metric_value REAL,
    higher_is_better INTEGER,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, alias)
);
"""


def validate_name(name: str) -> str:
    """``name`` if it is a safe artifact name, else a UsageError saying why."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise UsageError(
            f"invalid artifact name {name!r}",
            hint="use letters, digits, '_', '-' and '.', starting with a letter or digit, "
                 "without '/', '..' or a leading dot (at most 100 characters)")
    return name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checked_file(folder: Path, files: Mapping[str, Any], filename: str, *, where: str, hint: str | None,
                 verify: bool = True) -> Path:
    """``folder/filename`` once it matches its entry in a card's ``files``; else an ArtifactError naming it.

    The one check of an artifact's bytes on the way in: registry versions and
    exported folders both come through here, so a damaged file reads the same
    wherever it lies. ``where`` names the artifact in the message; without
    ``verify`` only the listing and the file's presence are checked.
    """
    entry = files.get(filename)
    if not isinstance(entry, Mapping):
        raise ArtifactError(f"{where}: has no file {filename!r} (files: {', '.join(files) or 'none'})", hint=hint)
    path = folder / filename
    if not path.is_file():
        raise ArtifactError(f"{where}: {filename} is missing", hint=hint)
    if verify and sha256_file(path) != entry.get("sha256"):
        raise ArtifactError(f"{where}: {filename} does not match its recorded sha256", hint=hint)
    return path


@dataclasses.dataclass(frozen=True)
class ArtifactRecord:
    """One version of one artifact, as the index knows it."""

    name: str
    version: int
    path: Path
    created: str
    kind: str
    engine: str
    relation: str | None
    parent: str | None
    card_sha256: str
    metric_name: str | None
    metric_value: float | None
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def card_path(self) -> Path:
        return self.path / CARD_FILE

    def card(self, *, verify: bool = False) -> dict:
        """The parsed card; with ``verify``, checked first against the sha256 in the index."""
        if verify and self.card_path.is_file() and sha256_file(self.card_path) != self.card_sha256:
            raise ArtifactError(f"{self.ref}: {CARD_FILE} changed after it was saved",
                                hint=f"`mltk verify {self.ref}` lists every mismatch")
        try:
            return json.loads(self.card_path.read_text())
        except FileNotFoundError:
            raise ArtifactError(f"{self.ref}: {self.card_path} is missing",
                                hint=f"the artifact folder was damaged; remove it with `mltk rm {self.ref}`") from None
        except json.JSONDecodeError:
            raise ArtifactError(f"{self.ref}: {self.card_path} is not valid JSON",
                                hint=f"run `mltk verify {self.ref}`") from None

    @property
    def damaged_hint(self) -> str:
        return f"the artifact changed after it was saved; `mltk verify {self.ref}` lists every problem"

    def file(self, filename: str, *, verify: bool = True) -> Path:
        """Path of one of the artifact's files, checked against the card's sha256 (unless ``verify`` is off)."""
        return checked_file(self.path, self.card().get("files", {}), filename, where=self.ref,
                            hint=self.damaged_hint, verify=verify)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        out["ref"] = self.ref
        out["aliases"] = list(self.aliases)
        return out


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    ref: str
    problems: list[str]
    checked: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


class Registry:
    """The index of artifacts under ``home`` (default ``$MLTK_HOME``)."""

    def __init__(self, home: str | Path | None = None):
        self.home = Path(home) if home is not None else mltk_home()
        self.artifacts_dir = self.home / "artifacts"
        self.tmp_dir = self.home / "tmp"
        self.db_path = self.home / "registry.db"

    # ------------------------------------------------------------ index access

    @contextlib.contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection to the index. Readers open it read-only, so ``ls``, ``verify`` and ``eval`` work
        in a home they may not write (a shared, read-only MLTK_HOME); only writers create or change it."""
        conn = self._open_writer() if write else self._open_reader()
        try:
            if write:
                conn.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    # SQLite has already rolled back after some errors (a full disk): a second
                    # ROLLBACK would fail and hide the error that matters.
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            else:
                yield conn
        except sqlite3.DatabaseError as exc:
            raise self._index_error(exc, write) from None
        finally:
            conn.close()

    def _open_writer(self) -> sqlite3.Connection:
        deadline = time.monotonic() + WRITER_WAIT_S
        while True:
            conn = None
            try:
                self.home.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.db_path, timeout=WRITER_WAIT_S, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(_SCHEMA)
                return conn
            except (OSError, sqlite3.DatabaseError) as exc:
                if conn is not None:
                    conn.close()
                # Two processes creating the index at once: SQLite answers "locked" at once, without waiting,
                # when waiting could deadlock (both switching a new file to WAL). Try again until the deadline.
                if (isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
                        and time.monotonic() < deadline):
                    time.sleep(0.05)
                    continue
                raise self._index_error(exc, write=True) from None

    def _open_reader(self) -> sqlite3.Connection:
        if self.db_path.is_file():
            uri = self.db_path.resolve().as_uri()
            # The second address is for a WAL index in a folder this process cannot write:
            # SQLite cannot create the shared-memory file beside it, and nobody can be
            # writing there either, so the index is read as a fixed file.
            for address in (f"{uri}?mode=ro", f"{uri}?mode=ro&immutable=1"):
                conn = None
                try:
                    conn = sqlite3.connect(address, uri=True, timeout=60, isolation_level=None)
                    conn.execute("SELECT 1 FROM artifacts LIMIT 1")
                    return conn
                except sqlite3.DatabaseError as exc:
                    if conn is not None:
                        conn.close()
                    if "no such table" in str(exc):
                        break  # an index no writer has set up yet: no artifacts
                    if not (isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc)
                            and "immutable" not in address):
                        raise self._index_error(exc, write=False) from None
        conn = sqlite3.connect(":memory:", isolation_level=None)  # no index (yet): no artifacts
        conn.executescript(_SCHEMA)
        return conn

    def _writable(self) -> bool:
        folder = self.home if self.home.exists() else self.home.parent
        return os.access(folder, os.W_OK) and (not self.db_path.exists() or os.access(self.db_path, os.W_OK))

    def _index_error(self, exc: BaseException, write: bool) -> MltkError:
        """The error for an index that cannot be used. A writer that meets a full disk or a read-only
        home says so (the index itself is fine); only a damaged index is called unreadable."""
        text = str(getattr(exc, "strerror", None) or exc)
        if write and ("disk is full" in text or getattr(exc, "errno", None) == errno.ENOSPC):
            return MltkError(f"could not save: no space left on the device holding {self.home}; nothing was stored",
                             hint="free disk space or set MLTK_HOME to another folder, then retry")
        if write and ("readonly" in text or "read-only" in text.lower() or isinstance(exc, PermissionError)
                      or getattr(exc, "errno", None) == errno.EROFS or not self._writable()):
            return MltkError(f"could not change the registry: {self.home} is read-only ({text}); "
                             "nothing was changed", hint="set MLTK_HOME to a writable folder, then retry")
        return ArtifactError(f"{self.db_path}: registry index unreadable ({text})",
                             hint="move the file aside; artifacts under "
                                  f"{self.artifacts_dir} stay on disk")

    def _record(self, conn: sqlite3.Connection, row: tuple) -> ArtifactRecord:
        name, version = row[0], row[1]
        aliases = tuple(a for (a,) in conn.execute(
            "SELECT alias FROM aliases WHERE name=? AND version=? ORDER BY alias", (name, version)))
        return ArtifactRecord(name=name, version=version, path=self.artifacts_dir / name / str(version),
                              created=row[2], kind=row[3], engine=row[4], relation=row[5], parent=row[6],
                              card_sha256=row[7], metric_name=row[8], metric_value=row[9],
                              aliases=aliases)

    _COLUMNS = ("name, version, created, kind, engine, relation, parent, card_sha256, "
                "metric_name, metric_value")

    # ------------------------------------------------------------ saving

    def save(self, name: str, *, files: Mapping[str, bytes], card: Mapping[str, Any]) -> ArtifactRecord:
        """Store ``files`` (file name -> content) and ``card`` as the next version of ``name``.

        ``card`` must give ``engine`` and ``kind``; it may give ``lineage``
        (``{"parent": ref, "relation": ...}``), ``metrics`` and
        ``primary_metric`` (``{"name": ..., "higher_is_better": bool}``), which
        ``name@best`` ranks by. The registry adds name, version, creation
        time, mltk version and the sha256 of every file.
        """
        validate_name(name)
        for filename in files:
            if filename == CARD_FILE or "/" in filename or filename.startswith("."):
                raise UsageError(f"artifact file name {filename!r} is not allowed")
        for key in ("engine", "kind"):
            if key not in card:
                raise UsageError(f"artifact card needs '{key}'")
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        staging = self.tmp_dir / f"save-{uuid.uuid4().hex}"
        staging.mkdir()
        target: Path | None = None
        try:
            recorded = {}
            for filename, data in files.items():
                write_file(staging / filename, data)
                recorded[filename] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            with self._connect(write=True) as conn:
                (latest,) = conn.execute("SELECT MAX(version) FROM artifacts WHERE name=?", (name,)).fetchone()
                version = (latest or 0) + 1
                full_card = self._complete_card(card, name, version, recorded)
                card_bytes = (json.dumps(full_card, indent=2, sort_keys=False) + "\n").encode()
                write_file(staging / CARD_FILE, card_bytes)
                fsync_dir(staging)
                target = self.artifacts_dir / name / str(version)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():  # left by a save that died after its rename: not in the index
                    shutil.rmtree(target)
                os.rename(staging, target)
                fsync_dir(target.parent)
                metric = full_card.get("primary_metric") or {}
                metric_name = metric.get("name")
                metric_value = (full_card.get("metrics") or {}).get(metric_name) if metric_name else None
                lineage = full_card.get("lineage") or {}
                conn.execute(
                    "INSERT INTO artifacts VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (name, version, full_card["created"], full_card["kind"], full_card["engine"],
                     lineage.get("relation"), lineage.get("parent"),
                     hashlib.sha256(card_bytes).hexdigest(), metric_name,
                     float(metric_value) if isinstance(metric_value, (int, float)) else None,
                     int(bool(metric.get("higher_is_better", True)))))
                row = conn.execute(f"SELECT {self._COLUMNS} FROM artifacts WHERE name=? AND version=?",
                                   (name, version)).fetchone()
                record = self._record(conn, row)
            return record
        except OSError as exc:
            if target is not None and target.exists() and not staging.exists():
                shutil.rmtree(target, ignore_errors=True)
            raise MltkError(f"could not save artifact {name!r} under {self.home}: {exc.strerror or exc}",
                            hint="free disk space or set MLTK_HOME to a writable folder, then retry; "
                                 "nothing was stored") from None
        except BaseException:
            if target is not None and target.exists() and not staging.exists():
                shutil.rmtree(target, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _complete_card(card: Mapping[str, Any], name: str, version: int, files: dict) -> dict:
        created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        head = {"format": CARD_FORMAT, "name": name, "version": version, "created": created,
                "mltk_version": __version__}
        body = {k: v for k, v in card.items() if k not in head and k != "files"}
        return {**head, **body, "files": files}

    # ------------------------------------------------------------ lookup

    def resolve(self, ref: str) -> ArtifactRecord:
        """The record ``ref`` names (``name``, ``name:3``, ``name@alias``), or an ArtifactError."""
        match = _REF_RE.match(ref.strip()) if isinstance(ref, str) else None
        if not match:
            raise UsageError(f"{ref!r} is not an artifact reference",
                             hint="write name, name:VERSION or name@ALIAS, or a path to a file")
        name, version, alias = match["name"], match["version"], match["alias"]
        with self._connect() as conn:
            versions = [v for (v,) in conn.execute(
                "SELECT version FROM artifacts WHERE name=? ORDER BY version", (name,))]
            if not versions:
                names = [n for (n,) in conn.execute("SELECT DISTINCT name FROM artifacts")]
                near = difflib.get_close_matches(name, names, n=1)
                hint = f"did you mean '{near[0]}'? " if near else ""
                raise ArtifactError(f"no artifact named {name!r} in {self.home}",
                                    hint=hint + "list artifacts with `mltk ls`")
            if version is not None:
                chosen = int(version)
                if chosen not in versions:
                    raise ArtifactError(f"{name!r} has no version {chosen} (versions: "
                                        f"{', '.join(map(str, versions))})", hint="list them with `mltk ls`")
            elif alias is None or alias == "latest":
                chosen = versions[-1]
            elif alias == "best":
                chosen = self._best_version(conn, name)
            else:
                row = conn.execute("SELECT version FROM aliases WHERE name=? AND alias=?",
                                   (name, alias)).fetchone()
                if row is None:
                    known = [a for (a,) in conn.execute("SELECT alias FROM aliases WHERE name=?", (name,))]
                    raise ArtifactError(f"{name!r} has no alias {alias!r} (aliases: "
                                        f"{', '.join(list(COMPUTED_ALIASES) + known)})",
                                        hint=f"set one with `mltk alias {name}:VERSION {alias}`")
                chosen = row[0]
            row = conn.execute(f"SELECT {self._COLUMNS} FROM artifacts WHERE name=? AND version=?",
                               (name, chosen)).fetchone()
            return self._record(conn, row)

    def _best_version(self, conn: sqlite3.Connection, name: str) -> int:
        rows = conn.execute("SELECT version, metric_name, metric_value, higher_is_better FROM artifacts "
                            "WHERE name=? AND metric_value IS NOT NULL ORDER BY version", (name,)).fetchall()
        if not rows:
            raise ArtifactError(f"{name!r}@best: no version of {name!r} records a primary metric",
                                hint=f"use {name} or {name}:VERSION")
        higher = bool(rows[-1][3])
        best = max(rows, key=lambda r: (r[2] if higher else -r[2], r[0]))
        return best[0]

    def list(self, name: str | None = None) -> list[ArtifactRecord]:
        """Every artifact version (of ``name`` only, if given), oldest first."""
        with self._connect() as conn:
            if name is None:
                rows = conn.execute(f"SELECT {self._COLUMNS} FROM artifacts ORDER BY name, version").fetchall()
            else:
                rows = conn.execute(f"SELECT {self._COLUMNS} FROM artifacts WHERE name=? ORDER BY version",
                                    (name,)).fetchall()
            records = [self._record(conn, row) for row in rows]
            best = {}
            for rec in records:
                if rec.name not in best:
                    with contextlib.suppress(ArtifactError):
                        best[rec.name] = self._best_version(conn, rec.name)
        latest = {rec.name: rec.version for rec in records}
        out = []
        for rec in records:
            computed = tuple(a for a, v in (("latest", latest[rec.name]), ("best", best.get(rec.name)))
                             if v == rec.version)
            out.append(dataclasses.replace(rec, aliases=computed + rec.aliases))
        return out

    # ------------------------------------------------------------ changing

    def set_alias(self, ref: str, alias: str) -> ArtifactRecord:
        """Point ``name@alias`` at the version ``ref`` resolves to."""
        if alias in COMPUTED_ALIASES or not re.match(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$", alias):
            raise UsageError(f"invalid alias {alias!r}",
                             hint="use letters, digits, '_', '-', '.', starting with a letter; "
                                  f"{' and '.join(COMPUTED_ALIASES)} are kept up to date by mltk")
        record = self.resolve(ref)
        with self._connect(write=True) as conn:
            conn.execute("INSERT OR REPLACE INTO aliases VALUES (?,?,?)", (record.name, alias, record.version))
        return self.resolve(f"{record.name}@{alias}")

    def remove(self, ref: str, *, all_versions: bool = False) -> list[ArtifactRecord]:
        """Delete the version ``ref`` names, or every version of a bare name with ``all_versions``.

        The index rows go first, in one transaction, so a crash halfway leaves
        at worst an unindexed folder, never an indexed artifact with missing files.
        """
        name = ref.split(":")[0].split("@")[0]
        bare = name == ref.strip()
        if bare and all_versions:
            targets = self.list(name)
            if not targets:
                self.resolve(name)  # raises the not-found error with its hint
        else:
            if bare:
                versions = self.list(name)
                if len(versions) > 1:
                    raise UsageError(f"{name!r} has {len(versions)} versions",
                                     hint=f"name one ({name}:{versions[-1].version}) or remove them all "
                                          "with --all")
            targets = [self.resolve(ref)]
        with self._connect(write=True) as conn:
            for rec in targets:
                conn.execute("DELETE FROM artifacts WHERE name=? AND version=?", (rec.name, rec.version))
                conn.execute("DELETE FROM aliases WHERE name=? AND version=?", (rec.name, rec.version))
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for rec in targets:
            if rec.path.exists():
                trash = self.tmp_dir / f"rm-{uuid.uuid4().hex}"
                os.rename(rec.path, trash)
                shutil.rmtree(trash, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.artifacts_dir / name).rmdir()  # only when no version is left
        return targets

    # ------------------------------------------------------------ integrity

    def verify(self, ref: str) -> VerifyReport:
        """Recheck the card's sha256 against the index and every file against the card."""
        record = self.resolve(ref)
        problems: list[str] = []
        checked: list[str] = []
        if not record.card_path.is_file():
            return VerifyReport(record.ref, [f"{CARD_FILE} is missing"], checked)
        if sha256_file(record.card_path) != record.card_sha256:
            problems.append(f"{CARD_FILE} changed since it was saved (sha256 differs from the index)")
        try:
            card = json.loads(record.card_path.read_text())
        except json.JSONDecodeError:
            return VerifyReport(record.ref, problems + [f"{CARD_FILE} is not valid JSON"], checked)
        checked.append(CARD_FILE)
        for filename, entry in card.get("files", {}).items():
            path = record.path / filename
            if not path.is_file():
                problems.append(f"{filename} is missing")
                continue
            size = path.stat().st_size
            if size != entry.get("bytes"):
                problems.append(f"{filename} has {size} bytes, the card records {entry.get('bytes')}")
            elif sha256_file(path) != entry.get("sha256"):
                problems.append(f"{filename} does not match its recorded sha256")
            checked.append(filename)
        for path in sorted(record.path.iterdir()):
            if path.name != CARD_FILE and path.name not in card.get("files", {}):
                problems.append(f"{path.name} is not listed in the card")
        return VerifyReport(record.ref, problems, checked)

    def export(self, ref: str, out_dir: str | Path, *, overwrite: bool = False) -> list[Path]:
        """Copy a verified artifact's files and card into ``out_dir``."""
        report = self.verify(ref)
        if not report.ok:
            raise ArtifactError(f"{report.ref}: failed verification: {'; '.join(report.problems)}",
                                hint="nothing was exported")
        record = self.resolve(report.ref)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        names = [CARD_FILE] + list(record.card().get("files", {}))
        clashes = [n for n in names if (out / n).exists()]
        if clashes and not overwrite:
            raise UsageError(f"{out}: would overwrite {', '.join(clashes)}",
                             hint="choose an empty folder or pass --overwrite")
        written = []
        for filename in names:
            shutil.copyfile(record.path / filename, out / filename)
            written.append(out / filename)
        return written
