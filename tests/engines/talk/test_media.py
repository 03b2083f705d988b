"""Reading any clip onto 25 fps / 16 kHz mono, writing H.264 + AAC mp4, and the errors that name the file."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from mltk.core.errors import ArtifactError, UsageError
from mltk.engines.talk import audio, media

from .conftest import SOURCE_FPS, TONE_HZ

av = pytest.importorskip("av", reason="PyAV (mltk[talk]) is not installed")
# AAC codes whole frames of 1024 samples: decoded audio may run up to one frame (64 ms at 16 kHz) long.
AAC_SLACK = 1024


def _source_index(frame: torch.Tensor) -> int:
    """The source frame a decoded frame came from, read off its grey level (8 per index)."""
    return round(float(frame[48:].float().mean()) / 8)  # below the square


def test_a_30_fps_clip_is_read_at_25_fps_by_nearest_timestamp_and_16_khz_mono(synthetic_video):
    clip = media.read_clip(synthetic_video)
    assert clip.frames.shape == (25, 64, 64, 3) and clip.frames.dtype == torch.uint8
    expected = [min(round(k / 25 * SOURCE_FPS - 1e-9), SOURCE_FPS - 1) for k in range(25)]
    assert [_source_index(frame) for frame in clip.frames] == expected
    assert clip.duration == pytest.approx(1.0)
    assert clip.audio.dim() == 1 and clip.sample_rate == 16_000
    assert 16_000 <= clip.audio.numel() <= 16_000 + AAC_SLACK


def test_the_tone_lights_the_mel_band_nearest_440_hz(synthetic_video):
    waveform = media.read_audio(synthetic_video)
    mel = audio.log_mel(waveform[1600:14400])  # the steady middle, away from codec edges
    loudest = int(mel.mean(0).argmax())
    centres = audio.mel_band_centres_hz()
    assert loudest == int((centres - TONE_HZ).abs().argmin()), (loudest, centres[loudest])


def test_write_then_read_round_trip_has_h264_and_aac_and_the_durations(tmp_path, synthetic_video):
    clip = media.read_clip(synthetic_video)
    out = media.write_video(tmp_path / "out.mp4", clip.frames, clip.audio)
    with av.open(str(out)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and sound.codec_context.name == "aac"
        assert video.average_rate == 25 and sound.rate == 16_000 and sound.channels == 1
        assert float(video.duration * video.time_base) == pytest.approx(1.0, abs=1e-6)
    again = media.read_clip(out)
    assert again.frames.shape == clip.frames.shape
    assert (again.frames.float() - clip.frames.float()).abs().mean() < 3.0
    assert abs(again.audio.numel() - clip.audio.numel()) <= AAC_SLACK
    assert not list(tmp_path.glob(".out-*")), "the temporary file was left behind"


def test_a_generator_of_odd_sized_frames_is_written_with_even_padding(tmp_path):
    frames = (np.full((31, 45, 3), 10 * k, np.uint8) for k in range(5))
    out = media.write_video(tmp_path / "odd.mp4", frames)
    clip = media.read_clip(out)
    assert clip.frames.shape == (5, 32, 46, 3) and clip.audio.numel() == 0


def test_undecodable_and_silent_files_raise_errors_naming_them(tmp_path, synthetic_video):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 64)
    with pytest.raises(ArtifactError, match="junk.wav"):
        media.read_audio(junk)
    silent = media.write_video(tmp_path / "silent.mp4", torch.zeros(3, 16, 16, 3, dtype=torch.uint8))
    with pytest.raises(ArtifactError, match="silent.mp4: has no audio track"):
        media.read_audio(silent)
    with pytest.raises(ArtifactError, match="missing.mp4: no such file"):
        media.read_clip(tmp_path / "missing.mp4")


def test_an_output_that_cannot_be_written_is_a_usage_error_naming_it(tmp_path):
    frames = torch.zeros(2, 16, 16, 3, dtype=torch.uint8)
    with pytest.raises(UsageError, match="nowhere/out.mp4"):
        media.write_video(tmp_path / "nowhere" / "out.mp4", frames)
    with pytest.raises(UsageError, match=r"out.avi: the output must be an \.mp4"):
        media.write_video(tmp_path / "out.avi", frames)


def test_without_pyav_the_error_names_the_extra(monkeypatch, synthetic_video):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(UsageError, match=r"mltk\[talk\]"):
        media.read_clip(synthetic_video)
