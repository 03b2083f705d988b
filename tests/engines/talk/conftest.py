"""A tiny talking-head-like clip written with PyAV: 30 fps, 1 s, a moving square, a 440 Hz tone at 44.1 kHz stereo."""

from __future__ import annotations

import numpy as np
import pytest

SOURCE_FPS = 30
SOURCE_RATE = 44_100
TONE_HZ = 440.0
SIZE = 64


def frame_for(index: int) -> np.ndarray:
    """Frame ``index``: grey level 8 * index (its index, readable after lossy coding) and a square in rows 20-35."""
    frame = np.full((SIZE, SIZE, 3), 8 * index, np.uint8)
    frame[20:36, 2 * index % (SIZE - 16):2 * index % (SIZE - 16) + 16] = 255
    return frame


@pytest.fixture
def synthetic_video(tmp_path):
    av = pytest.importorskip("av", reason="PyAV (mltk[talk]) is not installed")
    path = tmp_path / "square_30fps.mp4"
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=SOURCE_FPS, options={"crf": "10"})
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=SOURCE_RATE, layout="stereo")
        for index in range(SOURCE_FPS):
            frame = av.VideoFrame.from_ndarray(frame_for(index), format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        times = np.arange(SOURCE_RATE) / SOURCE_RATE
        tone = (0.5 * np.sin(2 * np.pi * TONE_HZ * times)).astype(np.float32)
        samples = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        samples.sample_rate, samples.pts = SOURCE_RATE, 0
        container.mux(sound.encode(samples))
        container.mux(sound.encode(None))
    return path
