"""The registry: versions, aliases, integrity, atomic saves and concurrent writers."""

from __future__ import annotations

import errno
import json
import sqlite3
import subprocess
import sys
import time

import pytest

from mltk.core import registry as registry_mod
from mltk.core.errors import ArtifactError, MltkError, UsageError
from mltk.core.registry import Registry


def _card(accuracy=None):
    card = {"kind": "classifier", "engine": "test", "lineage": {"parent": "dataset:digits", "relation": "trained"}}
    if accuracy is not None:
        card.update(metrics={"acc": accuracy}, primary_metric={"name": "acc", "higher_is_better": True})
    return card


def _save(reg, name="m", payload=b"weights", accuracy=None):
    return reg.save(name, files={"model.safetensors": payload}, card=_card(accuracy))


def test_versions_aliases_and_best(tmp_path):
    reg = Registry(tmp_path)
    first = _save(reg, accuracy=0.9)
    second = _save(reg, accuracy=0.95)
    third = _save(reg, accuracy=0.7)
    assert (first.version, second.version, third.version) == (1, 2, 3)
    assert reg.resolve("m").version == 3
    assert reg.resolve("m:1").version == 1
    assert reg.resolve("m@latest").version == 3
    assert reg.resolve("m@best").version == 2
    reg.set_alias("m:1", "prod")
    assert reg.resolve("m@prod").version == 1
    listing = {r.version: r.aliases for r in reg.list("m")}
    assert listing == {1: ("prod",), 2: ("best",), 3: ("latest",)}
    card = reg.resolve("m:2").card()
    assert card["name"] == "m" and card["version"] == 2
    assert card["lineage"] == {"parent": "dataset:digits", "relation": "trained"}
    assert card["files"]["model.safetensors"]["bytes"] == len(b"weights")


def test_unknown_references_are_missing_errors(tmp_path):
    reg = Registry(tmp_path)
    _save(reg, name="convnet-digits")
    with pytest.raises(ArtifactError, match="did you mean 'convnet-digits'"):
        reg.resolve("convnet-digit")
    with pytest.raises(ArtifactError, match="no version 7"):
        reg.resolve("convnet-digits:7")
    with pytest.raises(ArtifactError, match="no alias"):
        reg.resolve("convnet-digits@prod")
    with pytest.raises(UsageError):
        reg.resolve("a:b:c")


@pytest.mark.parametrize("name", ["a/b", "..", "../x", ".hidden", "a..b", "", "x" * 101, "a b"])
def test_unsafe_names_refused_and_nothing_written(tmp_path, name):
    reg = Registry(tmp_path)
    with pytest.raises(UsageError, match="invalid artifact name"):
        _save(reg, name=name)
    assert reg.list() == []
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())


def test_verify_catches_changed_file_and_card(tmp_path):
    reg = Registry(tmp_path)
    record = _save(reg)
    assert reg.verify("m").ok
    (record.path / "model.safetensors").write_bytes(b"weightz")
    report = reg.verify("m")
    assert not report.ok and "sha256" in report.problems[0]
    with pytest.raises(ArtifactError, match="does not match its recorded sha256"):
        record.file("model.safetensors")
    record = _save(reg)
    card = json.loads(record.card_path.read_text())
    card["metrics"] = {"acc": 1.0}
    record.card_path.write_text(json.dumps(card))
    assert any("card.json changed" in p for p in reg.verify(record.ref).problems)


def test_disk_full_during_save_leaves_no_artifact(tmp_path, monkeypatch):
    reg = Registry(tmp_path)
    _save(reg)
    real_write = registry_mod.write_file
    calls = {"n": 0}

    def failing_write(path, data):
        calls["n"] += 1
        if calls["n"] == 2:  # the card, written after the weights
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(registry_mod, "write_file", failing_write)
    with pytest.raises(MltkError, match="No space left on device") as info:
        _save(reg, payload=b"new weights")
    assert info.value.exit_code == 1
    monkeypatch.setattr(registry_mod, "write_file", real_write)
    assert [r.version for r in reg.list("m")] == [1]
    assert sorted(p.name for p in (tmp_path / "artifacts" / "m").iterdir()) == ["1"]
    assert list((tmp_path / "tmp").iterdir()) == []
    assert reg.verify("m").ok
    assert _save(reg).version == 2  # the index is consistent: the next save just works


def test_failure_after_rename_rolls_back_the_folder(tmp_path, monkeypatch):
    reg = Registry(tmp_path)
    real_complete = Registry._complete_card

    class Boom(Exception):
        pass

    def complete_then_break_index(card, name, version, files):
        out = real_complete(card, name, version, files)
        out["metrics"] = {"acc": object()}  # not JSON: fails after the version is taken
        return out

    monkeypatch.setattr(Registry, "_complete_card", staticmethod(complete_then_break_index))
    with pytest.raises(TypeError):
        _save(reg)
    assert reg.list() == []
    assert not any((tmp_path / "artifacts").glob("m/*"))


_SAVER = """
import sys, time
from pathlib import Path
from mltk.core.registry import Registry
home, go = sys.argv[1], Path(sys.argv[2])
reg = Registry(home)
reg.list()  # open the index before the race
while not go.exists():
    time.sleep(0.005)
card = {"kind": "classifier", "engine": "test"}
print(reg.save("shared", files={"model.safetensors": b"w" * 100000}, card=card).version)
"""


def test_two_processes_saving_the_same_name_get_two_versions(tmp_path):
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _SAVER, str(tmp_path / "home"), str(go)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(1.0)
    go.touch()
    outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    assert sorted(int(out) for out in outputs) == [1, 2]
    records = Registry(tmp_path / "home").list("shared")
    assert [r.version for r in records] == [1, 2]
    assert all(Registry(tmp_path / "home").verify(r.ref).ok for r in records)


def test_a_writer_told_locked_at_once_tries_again(tmp_path, monkeypatch):
    """SQLite says "database is locked" without waiting when waiting could deadlock (two processes switching a
    new index to WAL at once): the writer tries again instead of failing the save."""
    import mltk.core.registry as registry_module

    real_connect, refusals = sqlite3.connect, []

    class RefusesWalOnce:
        def __init__(self, conn):
            self._conn = conn

        def execute(self, sql, *args):
            if sql.startswith("PRAGMA journal_mode") and not refusals:
                refusals.append(sql)
                raise sqlite3.OperationalError("database is locked")
            return self._conn.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._conn, name)

    monkeypatch.setattr(registry_module.sqlite3, "connect", lambda *a, **k: RefusesWalOnce(real_connect(*a, **k)))
    record = _save(Registry(tmp_path / "home"))
    monkeypatch.undo()
    assert refusals and record.version == 1
    assert Registry(tmp_path / "home").verify(record.ref).ok


def test_remove_and_export(tmp_path):
    reg = Registry(tmp_path / "home")
    _save(reg)
    _save(reg, payload=b"v2")
    with pytest.raises(UsageError, match="has 2 versions"):
        reg.remove("m")
    out = tmp_path / "out"
    written = reg.export("m:2", out)
    assert sorted(p.name for p in written) == ["card.json", "model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == b"v2"
    with pytest.raises(UsageError, match="would overwrite"):
        reg.export("m:2", out)
    assert [r.ref for r in reg.remove("m:1")] == ["m:1"]
    assert [r.version for r in reg.list("m")] == [2]
    reg.remove("m", all_versions=True)
    assert reg.list() == []
    with sqlite3.connect(tmp_path / "home" / "registry.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM aliases").fetchone() == (0,)


def test_a_full_disk_while_writing_the_index_says_so_and_stores_nothing(tmp_path, monkeypatch):
    reg = Registry(tmp_path)
    _save(reg)
    real_open = Registry._open_writer

    def open_on_a_full_disk(self):
        conn = real_open(self)
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count={pages}")  # SQLite then fails as on a full disk
        return conn

    monkeypatch.setattr(Registry, "_open_writer", open_on_a_full_disk)
    # a primary metric with a long name: its row needs more pages than the index may grow by
    big_card = {**_card(), "primary_metric": {"name": "x" * 200_000, "higher_is_better": True}}
    with pytest.raises(MltkError, match=r"could not save: no space left on the device holding .*; "
                                        r"nothing was stored") as info:
        reg.save("m", files={"model.safetensors": b"new"}, card=big_card)
    assert info.value.exit_code == 1 and "unreadable" not in info.value.message
    monkeypatch.setattr(Registry, "_open_writer", real_open)
    assert [r.version for r in reg.list("m")] == [1]
    assert sorted(p.name for p in (tmp_path / "artifacts" / "m").iterdir()) == ["1"]


def test_reading_a_home_without_an_index_creates_nothing(tmp_path):
    home = tmp_path / "home"
    assert Registry(home).list() == []
    assert not home.exists()
    with pytest.raises(ArtifactError, match="no artifact named 'm'"):
        Registry(home).resolve("m")
