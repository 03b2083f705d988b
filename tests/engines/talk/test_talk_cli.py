"""``mltk talk`` end to end on a tiny trained model, its errors, and motion taken from a driving clip."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from mltk.engines.talk import audio as speech
from mltk.engines.talk import media
from mltk.engines.talk.api import load_talker
from mltk.engines.talk.data import load_talking_data, write_synthetic_talking_folder
from mltk.engines.talk.inference import frame_windows, ping_pong

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"
FACE = SHARED / "talking_head" / "sadtalker_examples" / "source_image" / "happy.png"
MODELS = SHARED / "face_models" / "mediapipe"

pytest.importorskip("av", reason="PyAV (mltk[talk]) is not installed")


def write_wav(path: Path, seconds: float, rate: int = 22_050, channels: int = 2) -> Path:
    """A stereo 22.05 kHz 16-bit WAV (resampled to 16 kHz mono when read): a tone with a pulsing loudness."""
    times = np.arange(round(seconds * rate)) / rate
    tone = 0.4 * np.sin(2 * np.pi * 300 * times) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * times))
    samples = (np.repeat(tone[:, None], channels, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())
    return path


@pytest.fixture
def clips(tmp_path) -> Path:
    return write_synthetic_talking_folder(tmp_path / "clips", clips=3, seconds=1.0, size=32)


@pytest.fixture
def trained(cli, clips) -> str:
    result = cli("train", "styletalker", "-p", "tiny", f"data=video-folder:{clips}", "name=talker", "--format", "json")
    assert result.code == 0, result.stderr
    return result.json()["artifact"]


def test_talk_writes_an_mp4_as_long_as_the_audio_with_the_audio_in_it(cli, trained, tmp_path, monkeypatch):
    pytest.importorskip("mediapipe", reason="mediapipe (mltk[talk]) is not installed")
    if not FACE.is_file() or not (MODELS / "face_landmark.tflite").is_file():
        pytest.skip(f"shared face image or face models absent under {SHARED}")
    monkeypatch.setenv("MLTK_DATA", str(SHARED))
    speech_file = write_wav(tmp_path / "speech.wav", 1.3)
    out = tmp_path / "out.mp4"
    result = cli("talk", str(FACE), str(speech_file), "-o", str(out), "--format", "json")
    assert result.code == 0, result.stderr
    document = result.json()
    samples = media.read_audio(speech_file).shape[0]
    assert document["frames"] == speech.frame_count(samples) == 33
    assert document["fps"] == 25 and document["duration"] == pytest.approx(33 / 25)
    assert document["adaptation"]["generator_steps"] == 100  # fitted to the face by default (--adapt-steps)
    assert 0 < document["adaptation_seconds"] < document["generation_seconds"]
    assert document["rendering_frames_per_second"] > document["frames_per_second"]
    assert "frames 32/33" in result.stderr and "frames 33/33" in result.stderr  # progress per batch
    written = media.read_clip(out)
    assert written.frames.shape[:3] == (33, 16, 16)
    assert written.fps == 25
    # AAC decodes whole 1024-sample frames: up to 64 ms more than was written
    assert samples <= written.audio.shape[0] <= samples + 1024 + 640
    sheet = Path(document["contact_sheet"])
    assert sheet.is_file() and sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (128, 128), (120, 120, 120)).save(blank)
    faceless = cli("talk", str(blank), str(speech_file), "-o", str(tmp_path / "other.mp4"))
    assert faceless.code == 3 and "blank.png" in faceless.stderr and "no face" in faceless.stderr
    assert not (tmp_path / "other.mp4").exists()


def test_an_unwritable_output_fails_before_any_work(cli, tmp_path):
    missing = tmp_path / "no-such-folder" / "out.mp4"
    result = cli("talk", str(tmp_path / "face.png"), str(tmp_path / "speech.wav"), "-o", str(missing))
    assert result.code == 2 and str(missing) in result.stderr and "does not exist" in result.stderr
    wrong = cli("talk", str(tmp_path / "face.png"), str(tmp_path / "speech.wav"), "-o", str(tmp_path / "out.avi"))
    assert wrong.code == 2 and ".mp4" in wrong.stderr


def test_without_a_model_it_says_which_command_trains_one(cli, tmp_path):
    result = cli("talk", str(tmp_path / "face.png"), str(tmp_path / "speech.wav"), "-o", str(tmp_path / "out.mp4"))
    assert result.code == 3
    assert "no talking-head model" in result.stderr and "mltk train styletalker" in result.stderr


def test_motion_from_a_driving_clip_carries_its_motion_not_the_prior_s(trained, clips, tmp_path):
    talker = load_talker(trained)
    data = load_talking_data(f"video-folder:{clips}", size=talker.resolution, held_out_speakers=0,
                             alignment="none", cache_dir=tmp_path / "cache")
    driving, other = data.train[0], data.train[1]
    source = data.train[2].faces[0]
    audio = torch.cat([data.train[2].audio, data.train[1].audio])[: 40 * 640]  # 40 frames, the driving clip 25

    def run(**options) -> tuple[torch.Tensor, torch.Tensor]:
        kept: list[torch.Tensor] = []
        frames = torch.cat(list(talker.generate(source, audio, keep_motion=kept, **options)))
        return frames, torch.cat(kept)

    driven_frames, driven = run(motion_from=driving, seed=0)
    expected = ping_pong(talker.posterior_motion(driving), 40)
    torch.testing.assert_close(driven, expected)
    assert torch.equal(driven[25], expected[23])  # played back after the clip's end, not jumping to frame 0
    reseeded_frames, reseeded = run(motion_from=driving, seed=7)
    assert torch.equal(reseeded, driven) and torch.equal(reseeded_frames, driven_frames)  # no prior draw involved
    _, sampled = run(seed=0)
    assert not torch.allclose(sampled, driven, atol=1e-3)
    other_frames, other_motion = run(motion_from=other, seed=0)
    assert not torch.allclose(other_motion, driven, atol=1e-3)
    assert driven_frames.shape == other_frames.shape == (40, talker.resolution, talker.resolution, 3)
    static = torch.cat(list(talker.generate(source, audio, static=True)))
    assert static.shape == driven_frames.shape and (static == static[:1]).all()


def test_long_audio_in_small_batches_gives_the_frames_of_one_batch(trained, clips):
    talker = load_talker(trained)
    source = torch.full((3, 16, 16), 128, dtype=torch.uint8)
    audio = media.read_audio(clips / "speaker0.mp4")
    talker.batch_frames = 64
    whole = list(talker.generate(source, audio, seed=3))
    talker.batch_frames = 7
    pieces = list(talker.generate(source, audio, seed=3))
    total = speech.frame_count(audio.shape[0])
    assert len(whole) == 1 and [len(p) for p in pieces] == [7] * (total // 7) + [total % 7] * (total % 7 > 0)
    torch.testing.assert_close(torch.cat(pieces).float(), whole[0].float(), atol=1, rtol=0)


def test_per_batch_mel_windows_are_the_clip_s_windows():
    mel = torch.randn(300, 80)
    whole = speech.mel_windows(mel, 95)
    for first, count in ((0, 7), (5, 32), (61, 34)):
        torch.testing.assert_close(frame_windows(mel, first, count), whole[first:first + count], rtol=0, atol=0)
