"""Talking-face data: prepared clips, the speaker split, the cache, skipped files, faceless frames, mouth crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mltk.core.errors import DataMissingError, UsageError
from mltk.engines.talk import audio, data, faces, media

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"
REAL_CLIP = SHARED / "talking_head" / "videoretalking_examples" / "face" / "5.mp4"
MODELS = SHARED / "face_models" / "mediapipe"


@pytest.fixture
def talk_data_av():
    return pytest.importorskip("av", reason="PyAV (mltk[talk]) is not installed")


@pytest.fixture
def synthetic_talk_folder(tmp_path, talk_data_av):
    return data.write_synthetic_talking_folder(tmp_path / "videos", clips=3, seconds=1.0, size=32)


def test_synthetic_clips_load_split_by_speaker_on_one_time_base(synthetic_talk_folder, tmp_path):
    loaded = data.load_talking_data(f"video-folder:{synthetic_talk_folder}", size=24, alignment="none",
                                    cache_dir=tmp_path / "cache")
    assert loaded.train_speakers == ["speaker0", "speaker1"] and loaded.held_out_speakers == ["speaker2"]
    for clip in loaded.train + loaded.held_out:
        assert clip.faces.dtype == torch.uint8 and clip.faces.shape == (25, 3, 24, 24)
        assert clip.mels.shape == (25, audio.WINDOW_MEL_FRAMES, audio.N_MELS)
        assert clip.audio.shape == (25 * data.SAMPLES_PER_FRAME,) and clip.landmarks is None
        # The windows are audio.mel_windows of the clip's own audio.
        expected = audio.mel_windows(audio.log_mel(clip.audio), 25)
        assert torch.allclose(clip.mels[2:-2], expected[2:-2], atol=0.05)
    again = data.load_talking_data(f"video-folder:{synthetic_talk_folder}", size=24, alignment="none",
                                   cache_dir=tmp_path / "cache", held_out_speakers=2)
    assert again.held_out_speakers == ["speaker1", "speaker2"]


def test_the_synthetic_mouth_opens_with_the_loudness_of_its_frame(synthetic_talk_folder, tmp_path):
    clip = data.load_talking_data(f"video-folder:{synthetic_talk_folder}", size=32, alignment="none",
                                  cache_dir=tmp_path / "cache").train[0]
    darkness = 1 - data.mouth_crops(clip.faces, 16).mean((1, 2, 3))
    loudness = clip.mels[:, 6:10].amax(2).mean(1)  # the loudest band in the mel frames nearest the video frame
    correlation = torch.corrcoef(torch.stack([darkness, loudness]))[0, 1]
    assert correlation > 0.8
    shifted = torch.corrcoef(torch.stack([darkness[3:], loudness[:-3]]))[0, 1]
    assert shifted < correlation - 0.3


def test_a_second_load_reads_the_cache_and_another_size_does_not(synthetic_talk_folder, tmp_path, monkeypatch):
    spec = f"video-folder:{synthetic_talk_folder}"
    first = data.load_talking_data(spec, size=16, alignment="none", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 3

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a cached clip")

    monkeypatch.setattr(media, "iter_frames", no_decoding)
    monkeypatch.setattr(media, "read_audio", no_decoding)
    second = data.load_talking_data(spec, size=16, alignment="none", cache_dir=tmp_path / "cache")
    assert torch.equal(first.train[0].faces, second.train[0].faces)
    assert torch.equal(first.held_out[0].mels, second.held_out[0].mels)
    with pytest.raises(AssertionError, match="decoded a cached clip"):
        data.load_talking_data(spec, size=20, alignment="none", cache_dir=tmp_path / "cache")


def test_a_video_without_audio_is_skipped_naming_it_and_an_unusable_folder_is_an_error(tmp_path, talk_data_av):
    folder = data.write_synthetic_talking_folder(tmp_path / "videos", clips=2, size=16)
    silent = folder / "mute.mp4"
    media.write_video(silent, torch.zeros(5, 16, 16, 3, dtype=torch.uint8))
    with pytest.warns(data.TalkDataWarning, match="mute.mp4: skipped: has no audio track"):
        loaded = data.load_talking_data(f"video-folder:{folder}", size=16, alignment="none",
                                        cache_dir=tmp_path / "cache")
    assert {clip.speaker for clip in loaded.train + loaded.held_out} == {"speaker0", "speaker1"}

    only_silent = tmp_path / "silent"
    only_silent.mkdir()
    for name in ("a", "b"):
        media.write_video(only_silent / f"{name}.mp4", torch.zeros(5, 16, 16, 3, dtype=torch.uint8))
    with pytest.warns(data.TalkDataWarning), pytest.raises(DataMissingError, match=f"{only_silent}: no usable clip"):
        data.load_talking_data(f"video-folder:{only_silent}", size=16, alignment="none", cache_dir=tmp_path / "c")
    with pytest.raises(DataMissingError, match="holds no .mp4"):
        data.load_talking_data(f"video-folder:{tmp_path / 'cache'}", size=16, alignment="none")


def test_bad_specs_and_splits_are_usage_errors(synthetic_talk_folder):
    with pytest.raises(UsageError, match="unknown talking-face data"):
        data.load_talking_data("voxceleb", size=32)
    with pytest.raises(UsageError, match="cannot hold out 3 of 3"):
        data.load_talking_data(f"video-folder:{synthetic_talk_folder}", size=32, held_out_speakers=3)


def test_speakers_are_the_first_subfolder_or_the_file_stem(tmp_path):
    for relative in ("id00012/abc/00001.mp4", "id00012/def/00002.mp4", "id00099/x/00001.mp4", "hdtf_one.mp4"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    _, videos = data.list_videos(f"video-folder:{tmp_path}")
    assert [video.speaker for video in videos] == ["hdtf_one", "id00012", "id00012", "id00099"]
    train, held = data.split_by_speaker(videos, 1)
    assert [video.name for video in held] == ["id00099/x/00001"]


def test_the_shared_clips_hold_out_a_speaker_never_seen_in_training():
    if not REAL_CLIP.is_file():
        pytest.skip(f"shared talking-head clips absent under {SHARED}")
    _, videos = data.list_videos("talking-head", data_dir=SHARED)
    assert len(videos) == 6
    train, held = data.split_by_speaker(videos, 1)
    assert [video.name for video in held] == ["videoretalking_examples/face/5"]
    # The same person appears in two clips; both are on the training side.
    same = [video for video in videos if video.speaker == "sadtalker_examples/WDA_AlexandriaOcasioCortez_000"]
    assert len(same) == 2 and all(video in train for video in same)


def test_mouth_crops_are_the_lower_face_scaled_to_unit_range():
    crops = torch.zeros(2, 3, 40, 40, dtype=torch.uint8)
    crops[:, :, 20:36, 12:28] = 255  # exactly MOUTH_REGION of a 40 px crop
    mouths = data.mouth_crops(crops, 8)
    assert mouths.shape == (2, 3, 8, 8) and mouths.dtype == torch.float32
    assert torch.allclose(mouths, torch.ones_like(mouths))


@pytest.fixture(scope="module")
def faceless_edges_and_gap(tmp_path_factory):
    pytest.importorskip("av", reason="PyAV (mltk[talk]) is not installed")
    pytest.importorskip("mediapipe", reason="mediapipe (mltk[talk]) is not installed")
    if not REAL_CLIP.is_file() or not (MODELS / "face_landmark.tflite").is_file():
        pytest.skip(f"shared talking-head clip or face models absent under {SHARED}")
    from PIL import Image

    folder = tmp_path_factory.mktemp("faces")
    real = []
    for frame in media.iter_frames(REAL_CLIP):
        real.append(np.asarray(Image.fromarray(frame).resize((192, 192))))
        if len(real) == 8:
            break
    grey = np.full_like(real[0], 128)
    sound = media.read_audio(REAL_CLIP)[: 11 * data.SAMPLES_PER_FRAME]
    media.write_video(folder / "edges.mp4", torch.from_numpy(np.stack([grey] * 3 + real)), sound)
    media.write_video(folder / "gap.mp4", torch.from_numpy(np.stack(real[:4] + [grey] + real[4:])), sound)
    return folder


def test_faceless_frames_at_the_edges_are_dropped_with_their_audio(faceless_edges_and_gap, tmp_path, monkeypatch):
    monkeypatch.setenv("MLTK_DATA", str(SHARED))  # where FaceAnalyzer finds the MediaPipe models
    spec = f"video-folder:{faceless_edges_and_gap}"
    with pytest.warns(data.TalkDataWarning) as caught:
        loaded = data.load_talking_data(spec, size=64, cache_dir=tmp_path, held_out_speakers=0)
    messages = [str(warning.message) for warning in caught]
    assert any("edges.mp4: dropped 3 frame(s) at the start and 0 at the end" in message for message in messages)
    assert any("gap.mp4: skipped: no face found in frame 4" in message for message in messages)
    [clip] = loaded.train
    assert clip.name == "edges" and clip.faces.shape == (8, 3, 64, 64) and clip.landmarks.shape == (8, 468, 2)
    assert clip.audio.shape == (8 * data.SAMPLES_PER_FRAME,)
    whole = media.read_audio(faceless_edges_and_gap / "edges.mp4", align_to_video=True)
    assert torch.equal(clip.audio, whole[3 * data.SAMPLES_PER_FRAME: 11 * data.SAMPLES_PER_FRAME])
    # Aligned: the eyes and nose sit on the template, the lips inside the mouth region.
    template = faces.template_pixels(64)
    assert (faces.alignment_points(clip.landmarks) - template).norm(dim=-1).mean() < 2.5
    lips = clip.landmarks[:, list(faces.MOUTH_LANDMARKS)] / 63
    left, top, right, bottom = data.MOUTH_REGION
    assert bool(((lips[..., 0] > left) & (lips[..., 0] < right) & (lips[..., 1] > top) & (lips[..., 1] < bottom)).all())
