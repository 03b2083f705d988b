"""Wav2Lip-convention log-mel features and one 16-frame window centred on each 25 fps video frame."""

from __future__ import annotations

import math

import pytest
import torch

from mltk.engines.talk import audio


def test_the_filterbank_equals_librosas_slaney_default():
    librosa = pytest.importorskip("librosa", reason="librosa is not installed (the hand-property tests still run)")
    reference = librosa.filters.mel(sr=16_000, n_fft=800, n_mels=80, fmin=55, fmax=7_600)
    assert torch.allclose(audio.mel_filterbank(), torch.from_numpy(reference), atol=1e-7)


def test_each_filter_is_a_triangle_peaking_at_its_band_centre_with_unit_area():
    filters = audio.mel_filterbank().double()
    bin_hz = 16_000 / 800
    peaks_hz = filters.argmax(1).double() * bin_hz
    assert (peaks_hz - audio.mel_band_centres_hz().double()).abs().max() <= bin_hz / 2 + 1e-6
    assert bool((torch.diff(audio.mel_band_centres_hz()) > 0).all())
    # Slaney normalisation: the triangle of base (f[i+2] - f[i]) and height 2 / base has area 1 in Hz;
    # sampled every 20 Hz, the sum times the bin width is close to 1 once bands span several bins.
    areas = filters.sum(1) * bin_hz
    assert areas[40:].sub(1).abs().max() < 0.05
    assert audio.hz_to_mel(torch.tensor(1000.0)).item() == pytest.approx(15.0)
    assert audio.mel_to_hz(audio.hz_to_mel(torch.tensor([100.0, 3000.0]))).tolist() == pytest.approx([100, 3000])


@pytest.mark.parametrize("tone_hz", [300.0, 1000.0, 4000.0])
def test_a_pure_tone_lights_the_band_nearest_its_frequency(tone_hz):
    times = torch.arange(16_000) / 16_000
    mel = audio.log_mel(0.5 * torch.sin(2 * math.pi * tone_hz * times))
    assert mel.shape == (81, 80)  # 1 + 16000 // 200 frames, 80 per second
    loudest = int(mel[10:-10].mean(0).argmax())
    assert loudest == int((audio.mel_band_centres_hz() - tone_hz).abs().argmin())


def test_chunked_features_equal_the_one_shot_transform():
    waveform = torch.randn(16_000 * 2 + 123, generator=torch.Generator().manual_seed(0)) * 0.1
    assert torch.allclose(audio.log_mel(waveform, chunk_frames=7), audio.log_mel(waveform), atol=1e-4)


def test_silence_is_the_floor_and_features_stay_in_range():
    mel = audio.log_mel(torch.zeros(3_200))
    assert bool((mel == audio.SILENCE).all())
    loud = audio.log_mel(torch.ones(3_200) * 0.9)
    assert float(loud.max()) <= audio.MAX_ABS_VALUE and float(loud.min()) >= -audio.MAX_ABS_VALUE


def test_n_video_frames_get_n_windows_of_16_by_80_centred_on_each_frame():
    num_frames = 50  # 2 s
    mel = audio.log_mel(torch.zeros(32_000))
    windows = audio.mel_windows(mel, num_frames)
    assert windows.shape == (num_frames, 16, 80)
    centres_s = (audio.window_starts(num_frames).double() + 7.5) / audio.MEL_FRAMES_PER_SECOND
    frame_times = torch.arange(num_frames, dtype=torch.float64) / 25
    assert (centres_s - frame_times).abs().max() <= 0.5 / audio.MEL_FRAMES_PER_SECOND + 1e-9


def _click_row(window: torch.Tensor) -> float:
    """Where in a [16, 80] window the sound is: the energy-weighted mean row above silence."""
    weight = (window - audio.SILENCE).sum(-1)
    return float((weight * torch.arange(16)).sum() / weight.sum())


@pytest.mark.parametrize("frame", [0, 10, 48])
def test_a_click_at_a_frames_time_lands_in_the_middle_of_that_frames_window(frame):
    waveform = torch.zeros(32_000)
    waveform[frame * 640] = 1.0  # 640 samples per 25 fps frame
    windows = audio.mel_windows(audio.log_mel(waveform), 50)
    assert abs(_click_row(windows[frame]) - 7.5) <= 0.75  # the middle of 16 rows, within a mel hop
    # The next frame's window starts 3.2 mel frames later, so the click sits 3.2 rows earlier in it.
    assert _click_row(windows[frame + 1]) == pytest.approx(_click_row(windows[frame]) - 3.2, abs=0.6)
    far = windows[frame + 4] if frame < 40 else windows[frame - 4]
    assert bool((far == audio.SILENCE).all())  # 4 frames (0.16 s) away the window no longer holds it
    if frame == 0:
        assert bool((windows[0, :6] == audio.SILENCE).all())  # before the clip: padded with silence


def test_frame_count_covers_the_audio():
    assert audio.frame_count(16_000) == 25 and audio.frame_count(16_001) == 26 and audio.frame_count(0) == 0
