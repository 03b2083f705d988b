"""The styletalker recipe: each stage trains only its own parts (the discriminator is frozen once trained, the
generator once the motion stage starts), and the baselines are config keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mltk.core.registry import Registry
from mltk.core.tensor_files import load_safetensors
from mltk.engines.talk.data import write_synthetic_talking_folder

pytest.importorskip("av", reason="PyAV (mltk[talk]) is not installed")

PARTS = {"sync": ("sync.",), "generator": ("generator.", "image_encoder.", "audio_encoder.", "lip_edit."),
         "motion": ("posterior.", "motion_edit.", "priors.")}


def _changed(before: dict, after: dict, prefixes: tuple[str, ...]) -> bool:
    keys = [k for k in before if k.startswith(prefixes)]
    assert keys
    return any(not torch.equal(before[k], after[k]) for k in keys)


def test_stages_train_their_own_parts_in_order(cli, mltk_env, tmp_path):
    clips = write_synthetic_talking_folder(tmp_path / "clips", clips=3, seconds=1.0, size=32)
    result = cli("train", "styletalker", "-p", "tiny", f"data=video-folder:{clips}", "data.alignment=none",
                 "train.ckpt_every=4", "train.keep_checkpoints=10", "--format", "json")
    assert result.code == 0, result.stderr
    run = Path(result.json()["run_dir"])
    after_sync, after_generator = (load_safetensors(run / "ckpt" / f"step-{n}" / "model.safetensors")[0]
                                   for n in (4, 8))
    final = load_safetensors(Path(Registry().resolve(result.json()["artifact"]).path) / "model.safetensors")[0]
    # the generator stage moved its parts and left the frozen discriminator and the motion parts alone
    assert _changed(after_sync, after_generator, PARTS["generator"])
    assert not _changed(after_sync, after_generator, PARTS["sync"] + PARTS["motion"])
    # the motion stage moved the VAE and both priors, and nothing the earlier stages trained
    assert _changed(after_generator, final, PARTS["motion"])
    assert not _changed(after_generator, final, PARTS["sync"] + PARTS["generator"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["sync", "generator", "motion"]
    assert "train_lip_sync_loss" in records[1] and "train_gaussian_prior_nll" in records[2]
    metrics = result.json()["metrics"]
    assert {"held_out_motion_nll_flow", "held_out_motion_nll_gaussian", "held_out_psnr"} <= metrics.keys()


def test_baselines_are_config_keys(cli, mltk_env, tmp_path):
    clips = write_synthetic_talking_folder(tmp_path / "clips", clips=3, seconds=1.0, size=32)
    result = cli("train", "styletalker", "-p", "tiny", f"data=video-folder:{clips}", "data.alignment=none",
                 "generator.lip_weight=0", "model.prior=gaussian", "sync.steps=0", "--format", "json")
    assert result.code == 0, result.stderr
    records = [json.loads(line) for line in (Path(result.json()["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["generator", "motion"]
    assert "train_lip_sync_loss" not in records[0]  # reconstruction only
    assert "train_flow_prior_nll" in records[1]  # the KL against the Gaussian prior, the flow fitted beside it
    card = Registry().resolve(result.json()["artifact"]).card()
    assert card["talker"]["prior"] == "gaussian" and card["kind"] == "talking-head-model"


def test_a_bad_config_is_refused_with_the_key(cli):
    result = cli("train", "styletalker", "-p", "tiny", "model.resolution=48", "generator.lip_weight=-1")
    assert result.code == 2
    assert "model.resolution" in result.stderr and "power of two" in result.stderr
    assert "generator.lip_weight" in result.stderr
    unknown = cli("train", "styletalker", "-p", "tiny", "model.prior=normal")
    assert unknown.code == 2 and "model.prior" in unknown.stderr and "flow, gaussian" in unknown.stderr
