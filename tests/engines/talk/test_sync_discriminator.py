"""The contrastive lip-sync discriminator: negatives are really shifted, and once trained it scores a mouth with
its own sound above the same mouth with a shifted sound, on clips it never saw."""

from __future__ import annotations

import pytest
import torch

from mltk.engines.talk.data import load_talking_data, mouth_crops, write_synthetic_talking_folder
from mltk.engines.talk.inference import clip_faces
from mltk.engines.talk.model import mouth_region
from mltk.engines.talk.sync_discriminator import SyncDiscriminator, shifted_frames


def test_negatives_are_in_the_clip_and_at_least_min_shift_away():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([7, 7, 30, 30, 12])
    frames = torch.tensor([0, 6, 14, 29, 5])
    chosen = shifted_frames(frames, lengths, negatives=50, min_shift=3, generator=gen)
    assert torch.equal(chosen[:, 0], frames)
    negatives = chosen[:, 1:]
    assert ((negatives - frames[:, None]).abs() >= 3).all()
    assert (negatives >= 0).all() and (negatives < lengths[:, None]).all()
    # both sides of a frame in the middle of a clip are drawn
    assert (negatives[2] < 14).any() and (negatives[2] > 14).any()


def test_a_clip_too_short_for_any_negative_is_refused():
    with pytest.raises(ValueError, match="too short"):
        shifted_frames(torch.tensor([1]), torch.tensor([3]), negatives=2, min_shift=3,
                       generator=torch.Generator().manual_seed(0))


def test_mouth_region_is_the_data_s_mouth_crop_on_float_faces():
    faces = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(mouth_region(faces.float() / 127.5 - 1, 12), mouth_crops(faces, 12) * 2 - 1,
                               rtol=0, atol=1e-5)


def test_trained_discriminator_scores_aligned_pairs_above_shifted_ones(tmp_path):
    pytest.importorskip("av", reason="PyAV (mltk[talk]) is not installed")
    # 4-second clips and 80 steps: with 2-second clips and 40 steps, one initialisation in eight (and so the
    # float rounding of another machine) left the held-out margin at chance.
    folder = write_synthetic_talking_folder(tmp_path / "clips", clips=3, seconds=4.0, size=32)
    data = load_talking_data(f"video-folder:{folder}", size=32, held_out_speakers=1, alignment="none",
                             cache_dir=tmp_path / "cache")
    train, (held_out,) = data.train, data.held_out
    torch.manual_seed(0)
    discriminator = SyncDiscriminator(dim=16, channels=8, temperature=0.1)
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    faces = [clip_faces(clip.faces, 32) for clip in train]
    for _ in range(80):
        clip = int(torch.randint(len(train), (1,), generator=gen))
        length = train[clip].num_frames
        frames = torch.randint(length, (16,), generator=gen)
        windows = shifted_frames(frames, torch.full_like(frames, length), negatives=4, min_shift=2, generator=gen)
        loss, _ = discriminator(mouth_region(faces[clip][frames], 16), train[clip].mels[windows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        mouths = mouth_region(clip_faces(held_out.faces, 32), 16)
        frames = torch.arange(8, held_out.num_frames - 8)
        aligned = discriminator.scores(mouths[frames], held_out.mels[frames])
        shifted = torch.stack([discriminator.scores(mouths[frames], held_out.mels[frames + shift])
                               for shift in (-6, -4, 4, 6)])
    assert aligned.mean() > shifted.mean() + 0.1, (float(aligned.mean()), float(shifted.mean()))
    assert (aligned[None] > shifted).float().mean() > 0.65
