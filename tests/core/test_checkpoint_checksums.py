"""Checkpoints carry checksums: a damaged newest checkpoint is passed over for the one before it (the
resumed run still ends bit-identical), and a run with no checkpoint that verifies is an exit-3 error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mltk.core.errors import ArtifactError
from mltk.core.registry import Registry
from mltk.core.runs import CHECKSUM_FILE, RunDir, find_resume_checkpoint
from mltk.core.tensor_files import load_safetensors


def _flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # inside the tensor data, past the header
    path.write_bytes(bytes(data))


def _weights(ref: str) -> dict[str, torch.Tensor]:
    return load_safetensors(Registry().resolve(ref).file("model.safetensors"))[0]


def test_every_checkpoint_file_has_a_checksum(tmp_path):
    run = RunDir.create(tmp_path, "demo", "x", config_yaml="a: 1\n", config_hash="h")
    ckpt = run.save_checkpoint(3, {"w": torch.ones(2)}, {"step": 3})
    sums = json.loads((ckpt.path / CHECKSUM_FILE).read_text())
    assert set(sums) == {"model.safetensors", "trainer_state.safetensors", "clock.json"}
    assert ckpt.problems() == []
    (ckpt.path / "clock.json").write_text("")
    assert ckpt.problems() == ["clock.json does not match its checksum"]
    assert ckpt.seconds_spent == 0.0  # an empty clock reads as unknown, not as a crash


@pytest.mark.parametrize("damaged", ["model.safetensors", "trainer_state.safetensors"])
def test_a_flipped_bit_falls_back_to_the_previous_checkpoint(cli, tiny, mltk_env, damaged):
    args = ["train", "supervised", *tiny, "train.ckpt_every=20", "train.keep_checkpoints=3", "--format", "json"]
    straight = cli(*args, "name=straight")
    assert straight.code == 0, straight.stderr
    run = RunDir(Path(straight.json()["run_dir"]))
    steps = [c.step for c in run.checkpoints()]
    assert len(steps) == 3
    # As if the run had been killed after its second-newest checkpoint was written, and a bit then rotted.
    newest, middle = run.checkpoints()[-1], run.checkpoints()[-2]
    _flip_a_bit(middle.path / damaged)
    (run.path / "run.json").write_text(json.dumps({**run.info(), "status": "interrupted"}))
    shutil.rmtree(newest.path)

    resumed = cli(*args, "name=straight", "--resume", str(run.path))
    assert resumed.code == 0, resumed.stderr
    assert f"{middle.path}: damaged ({damaged} does not match its checksum)" in resumed.stderr
    assert resumed.json()["resumed_from"].endswith(f"step-{steps[0]}")
    first, second = _weights(straight.json()["artifact"]), _weights(resumed.json()["artifact"])
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_no_checkpoint_that_verifies_is_an_exit_3_error(tmp_path):
    run = RunDir.create(tmp_path, "demo", "x", config_yaml="a: 1\n", config_hash="h")
    ckpt = run.save_checkpoint(3, {"w": torch.ones(2)}, {"step": 3})
    _flip_a_bit(ckpt.path / "model.safetensors")
    with pytest.raises(ArtifactError, match="no checkpoint in .* verifies"):
        find_resume_checkpoint(str(run.path), root=tmp_path, recipe="demo", config_hash="h")
    with pytest.raises(ArtifactError, match="the checkpoint is damaged"):
        find_resume_checkpoint(str(ckpt.path), root=tmp_path, recipe="demo", config_hash="h")
