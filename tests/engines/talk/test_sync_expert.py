"""The independent lip-sync expert: aligned above shifted on an unseen speaker, LSE ordering, offsets, storage."""

from __future__ import annotations

import ast
import inspect

import pytest
import torch

from mltk.core.errors import ArtifactError
from mltk.core.registry import Registry
from mltk.engines.talk import data, sync_expert

SPEC = sync_expert.ExpertSpec(mouth_size=16, dim=16, channels=8)
# 4-second clips and 500 steps: with 2-second clips or 150 steps the held-out speaker's per-pair margins
# varied with the seed (and with the machine's float rounding) down to chance at some shifts.
TRAINING = sync_expert.ExpertTraining(steps=500, batch_size=32)


@pytest.fixture(scope="module")
def expert_and_clips(tmp_path_factory):
    pytest.importorskip("av", reason="PyAV (mltk[talk]) is not installed")
    folder = data.write_synthetic_talking_folder(tmp_path_factory.mktemp("sync") / "videos", clips=4, seconds=4.0,
                                                 size=32)
    loaded = data.load_talking_data(f"video-folder:{folder}", size=32, alignment="none",
                                    cache_dir=folder.parent / "cache")
    expert, stats = sync_expert.train_sync_expert(loaded.train, spec=SPEC, training=TRAINING)
    return expert, stats, loaded


def test_the_expert_scores_aligned_pairs_above_shifted_ones_for_an_unseen_speaker(expert_and_clips):
    expert, stats, loaded = expert_and_clips
    assert stats["final_accuracy"] > 0.7  # on its own training pairs
    clip = loaded.held_out[0]
    mouths = data.mouth_crops(clip.faces, SPEC.mouth_size)
    for shift in (-6, 4, 8):
        aligned, shifted = sync_expert.pair_scores(expert, mouths, clip.mels, shift)
        assert float(aligned.mean()) > float(shifted.mean()) + 0.1
        assert float((aligned > shifted).float().mean()) > 0.6


def test_lse_ranks_aligned_audio_above_shuffled_audio(expert_and_clips):
    expert, _, loaded = expert_and_clips
    clip = loaded.held_out[0]
    mouths = data.mouth_crops(clip.faces, SPEC.mouth_size)
    confidence, distance = sync_expert.lse(expert, mouths, clip.mels)
    order = torch.randperm(clip.num_frames, generator=torch.Generator().manual_seed(0))
    shuffled_confidence, shuffled_distance = sync_expert.lse(expert, mouths, clip.mels[order])
    assert confidence > shuffled_confidence + 0.1 and distance < shuffled_distance - 0.1


def test_the_sync_curve_finds_a_known_audio_delay(expert_and_clips):
    expert, _, loaded = expert_and_clips
    clip = loaded.held_out[0]
    mouths = data.mouth_crops(clip.faces, SPEC.mouth_size)
    assert abs(sync_expert.sync_curve(expert, mouths, clip.mels).best_offset) <= 1
    delayed = torch.cat([clip.mels[:1].expand(4, -1, -1), clip.mels[:-4]])  # audio 4 frames late
    curve = sync_expert.sync_curve(expert, mouths, delayed)
    assert abs(curve.best_offset - 4) <= 1
    assert curve.offsets == list(range(-15, 16)) and curve.lse_d == min(curve.distances)
    # Generated frames come as [T, S, S, 3]: the same crops are taken.
    assert torch.equal(sync_expert.expert_mouths(expert, clip.faces.permute(0, 2, 3, 1)), mouths)


def test_the_expert_is_its_own_artifact_read_back_from_the_registry_or_its_file(expert_and_clips, tmp_path):
    expert, stats, loaded = expert_and_clips
    files, card = sync_expert.expert_artifact(expert, training=TRAINING, stats=stats, data="synthetic")
    registry = Registry(tmp_path / "home")
    registry.save("talk-sync-expert", files=files, card=card)
    again, saved_card = sync_expert.load_sync_expert("talk-sync-expert", registry)
    assert saved_card["kind"] == "sync-expert" and saved_card["expert"]["mouth_size"] == SPEC.mouth_size
    clip = loaded.held_out[0]
    mouths = data.mouth_crops(clip.faces, SPEC.mouth_size)
    assert sync_expert.lse(again, mouths, clip.mels) == sync_expert.lse(expert, mouths, clip.mels)
    lone = tmp_path / "expert.safetensors"
    lone.write_bytes(files["model.safetensors"])
    assert sync_expert.load_sync_expert(str(lone))[1]["expert"] == saved_card["expert"]
    registry.save("not-an-expert", files=files, card={**card, "kind": "talking-head"})
    with pytest.raises(ArtifactError, match="not a sync-expert"):
        sync_expert.load_sync_expert("not-an-expert", registry)


def test_an_expert_trained_on_demand_is_cached(expert_and_clips, tmp_path, monkeypatch):
    _, _, loaded = expert_and_clips
    quick = sync_expert.ExpertTraining(steps=3, batch_size=8)
    first, _, path = sync_expert.expert_for_clips(loaded.train, data="synthetic", spec=SPEC, training=quick,
                                                  cache_dir=tmp_path)
    assert path.is_file() and path.parent == tmp_path

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(sync_expert, "train_sync_expert", no_training)
    second, card, again = sync_expert.expert_for_clips(loaded.train, data="synthetic", spec=SPEC, training=quick,
                                                       cache_dir=tmp_path)
    assert again == path and card["training"]["steps"] == 3
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True))
    with pytest.raises(AssertionError, match="trained again"):
        sync_expert.expert_for_clips(loaded.held_out, data="synthetic", spec=SPEC, training=quick, cache_dir=tmp_path)


def test_the_expert_never_imports_the_training_discriminator():
    tree = ast.parse(inspect.getsource(sync_expert))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not any("sync_discriminator" in name for name in imported)
    assert sync_expert.EXPERT_SEED != 0
