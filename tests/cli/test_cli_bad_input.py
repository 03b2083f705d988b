"""Bad input: one clear error line, the documented exit code, and the registry untouched."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3

import pytest
import torch

from mltk.core.registry import Registry


def _registry_state(home):
    db = home / "registry.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT name, version, card_sha256 FROM artifacts ORDER BY name, version").fetchall()


def _one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def trained(cli, tiny):
    result = cli("train", "supervised", *tiny, "--format", "quiet")
    assert result.code == 0, result.stderr
    return result.stdout.strip()


def test_unknown_recipe(cli):
    result = cli("train", "supervized")
    assert result.code == 2
    assert "unknown recipe 'supervized'; did you mean 'supervised'?" in _one_error_line(result)


def test_unknown_key_and_wrong_type_listed_at_once(cli, mltk_env):
    result = cli("train", "supervised", "optim.lrr=0.1", "train.epochs=many", "data.nmae=x")
    assert result.code == 2
    line = _one_error_line(result)
    assert "3 problems" in line
    assert "did you mean 'optim.lr'?" in line
    assert "train.epochs: expected an integer, got 'many'" in line
    assert "did you mean 'data.name'?" in line
    assert not (mltk_env / "runs").exists() and _registry_state(mltk_env / "home") == []


def test_missing_data_folder_names_the_file(cli, mltk_env):
    result = cli("train", "supervised", "data=mnist", f"data.data_dir={mltk_env / 'nowhere'}")
    assert result.code == 3
    line = _one_error_line(result)
    assert "train-images-idx3-ubyte.gz" in line and str(mltk_env / "nowhere") in line
    assert _registry_state(mltk_env / "home") == []


def test_reference_to_no_artifact(cli, trained):
    result = cli("eval", "convnet-digts")
    assert result.code == 3
    assert "did you mean 'convnet-digits'?" in _one_error_line(result)
    assert cli("eval", "convnet-digits:9").code == 3
    assert cli("show", "nothing-here").code == 3
    assert cli("eval", "does/not/exist.safetensors").code == 3


@pytest.mark.parametrize("name", ["a/b", "../up", ".hidden"])
def test_bad_artifact_name_refused_before_training(cli, mltk_env, name):
    result = cli("train", "supervised", f"name={name}")
    assert result.code == 2
    assert "invalid artifact name" in _one_error_line(result)
    assert not (mltk_env / "runs").exists()


def test_tampered_weights_refused_and_verify_fails(cli, mltk_env, trained):
    before = _registry_state(mltk_env / "home")
    weights = Registry(mltk_env / "home").resolve(trained).path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    result = cli("eval", trained)
    assert result.code == 3 and "sha256" in _one_error_line(result)
    assert cli("verify", trained).code == 3
    assert _registry_state(mltk_env / "home") == before


def test_truncated_and_corrupt_safetensors_files(cli, mltk_env, trained):
    out = mltk_env / "export"
    cli("export", trained, "-o", str(out))
    weights = out / "model.safetensors"
    loose = mltk_env / "loose.safetensors"
    loose.write_bytes(weights.read_bytes()[:-100])
    result = cli("eval", str(loose))
    assert result.code == 3 and "truncated" in _one_error_line(result)
    loose.write_bytes(b"<!DOCTYPE html><html>quota exceeded</html>")
    result = cli("eval", str(loose))
    assert result.code == 3 and "HTML" in _one_error_line(result)
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")  # the exported folder's sha256 no longer matches
    assert cli("eval", str(out)).code == 3


def test_card_naming_unknown_architecture(cli, mltk_env, trained):
    reg = Registry(mltk_env / "home")
    record = reg.resolve(trained)
    card = record.card()
    card["arch"]["arch"] = "futurenet"
    files = {"model.safetensors": (record.path / "model.safetensors").read_bytes()}
    future = reg.save("from-the-future", files=files, card={k: v for k, v in card.items() if k != "files"})
    result = cli("eval", future.ref)
    assert result.code == 3
    assert "unknown architecture 'futurenet'" in _one_error_line(result)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickled_object_in_pt_refused(cli, mltk_env, monkeypatch):
    monkeypatch.chdir(mltk_env)
    evil = mltk_env / "evil.pt"
    with open(evil, "wb") as handle:
        pickle.dump({"state_dict": {"w": torch.zeros(1)}, "extra": _Payload()}, handle)
    result = cli("import", str(evil), "--arch", "convnet", "--data", "digits")
    assert result.code == 3
    line = _one_error_line(result)
    assert "refused" in line and "weights_only" in line
    assert not (mltk_env / "PWNED").exists()
    assert _registry_state(mltk_env / "home") == []
    assert cli("eval", str(evil)).code == 2  # a bare .pt has no architecture: import it first


def test_import_plain_state_dict_then_eval(cli, mltk_env, trained):
    loaded = Registry(mltk_env / "home").resolve(trained)
    card = loaded.card()
    from safetensors.torch import load_file

    state = {k[len("net."):]: v for k, v in load_file(loaded.path / "model.safetensors").items()}
    plain = mltk_env / "plain.pt"
    torch.save({"model": state, "epoch": 2}, plain)
    args = card["arch"]["args"]
    result = cli("import", str(plain), "--arch", "convnet", "--data", "digits", "--name", "imported",
                 f"width={args['width']}", f"depth={args['depth']}",
                 "--mean", ",".join(map(str, card["arch"]["mean"])), "--std", ",".join(map(str, card["arch"]["std"])),
                 "--format", "quiet")
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == "imported:1"
    original = cli("eval", trained, "--format", "json").json()["metrics"]["accuracy"]
    imported = cli("eval", "imported", "--format", "json").json()
    assert imported["metrics"]["accuracy"] == original
    wrong = cli("import", str(plain), "--arch", "convnet", "--data", "digits", "width=8")
    assert wrong.code == 3 and "do not fit" in _one_error_line(wrong)


def test_debug_shows_traceback(cli, monkeypatch):
    monkeypatch.setenv("MLTK_DEBUG", "1")
    result = cli("train", "supervized")
    assert result.code == 2 and "Traceback" in result.stderr


def test_json_errors_leave_stdout_empty(cli):
    result = cli("eval", "nothing", "--format", "json")
    assert result.code == 3 and result.stdout == ""
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)


def test_protocol_options_are_checked(cli, trained):
    result = cli("eval", trained, "--protocol", "accuracy", "--runs", "5")
    assert result.code == 2
    assert "runs: unknown key" in _one_error_line(result) and "takes no options" in result.stderr
    assert cli("eval", trained, "--protocol", "acuracy").code == 2
