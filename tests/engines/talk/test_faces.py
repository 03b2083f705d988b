"""MediaPipe face box and mesh on real faces, template alignment, track smoothing, and the errors."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from mltk.core.errors import UsageError
from mltk.engines.talk import faces

SHARED = __import__("pathlib").Path(__file__).resolve().parents[4] / "shared" / "data"
MODELS = SHARED / "face_models" / "mediapipe"
ASTRONAUT = SHARED / "faces" / "skimage_samples" / "astronaut.png"


@pytest.fixture(scope="module")
def analyzer():
    pytest.importorskip("mediapipe", reason="mediapipe (mltk[talk]) is not installed")
    if not (MODELS / "face_landmark.tflite").is_file() or not ASTRONAUT.is_file():
        pytest.skip(f"shared face models or images absent under {SHARED}")
    with faces.FaceAnalyzer(MODELS) as face_analyzer:
        yield face_analyzer


@pytest.fixture(scope="module")
def astronaut():
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(ASTRONAUT).convert("RGB")).copy())


def test_a_real_face_gets_a_box_and_468_landmarks_inside_it(analyzer, astronaut):
    found = analyzer.detect(astronaut, source=ASTRONAUT)
    x0, y0, x1, y1 = found.box
    assert found.score > 0.8 and 50 < x1 - x0 < 300
    points = analyzer.landmarks(astronaut, source=ASTRONAUT)
    assert points.shape == (468, 3)
    eyes_and_nose = faces.alignment_points(points)
    assert bool(((eyes_and_nose[:, 0] > x0) & (eyes_and_nose[:, 0] < x1)).all())
    assert bool(((eyes_and_nose[:, 1] > y0) & (eyes_and_nose[:, 1] < y1)).all())
    right_eye, left_eye, nose = eyes_and_nose
    assert right_eye[0] < nose[0] < left_eye[0] and nose[1] > right_eye[1]  # unmirrored, upright
    mouth = points[list(faces.MOUTH_LANDMARKS), 1].mean()
    assert mouth > nose[1]


def test_alignment_puts_eyes_and_nose_on_the_template_and_a_redetection_agrees(analyzer, astronaut):
    aligned = faces.align(astronaut[None], analyzer.landmarks(astronaut)[None], size=256)
    assert aligned.crops.shape == (1, 256, 256, 3)
    template = faces.template_pixels(256)
    assert float((faces.alignment_points(aligned.landmarks[0]) - template).norm(dim=-1).max()) < 3.0
    again = analyzer.landmarks(aligned.crops[0], source="crop")
    assert float((faces.alignment_points(again) - template).norm(dim=-1).max()) < 4.0


def test_a_frame_without_a_face_names_the_file_and_the_frame(analyzer, astronaut):
    frames = torch.stack([astronaut, astronaut, torch.zeros_like(astronaut)])
    with pytest.raises(faces.NoFaceFound, match=r"talk\.mp4, frame 2: no face found"):
        analyzer.track(frames, source="talk.mp4")


def test_the_similarity_fit_recovers_a_known_rotation_scale_and_shift():
    angle, scale, shift = 0.3, 1.7, torch.tensor([5.0, -2.0])
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    source = torch.tensor([[0.0, 0.0], [10.0, 1.0], [3.0, 8.0], [-4.0, 2.0]])
    target = source @ (scale * rotation).T + shift
    matrix = faces.similarity_transform(source, target)
    assert torch.allclose(matrix, torch.cat([scale * rotation, shift[:, None]], 1), atol=1e-5)
    assert torch.allclose(faces.apply_transform(matrix, source), target, atol=1e-4)


def test_warp_by_a_pure_shift_moves_pixels_by_that_shift():
    image = torch.zeros(32, 32, 3, dtype=torch.uint8)
    image[10, 12] = 200
    crop = faces.warp(image, torch.tensor([[1.0, 0.0, -4.0], [0.0, 1.0, -6.0]]), 16)
    assert crop[4, 8].tolist() == [200, 200, 200] and int(crop.sum()) == 600


def test_one_euro_smoothing_cuts_jitter_on_a_noisy_slow_track():
    generator = torch.Generator().manual_seed(0)
    times = torch.arange(100) / 25
    truth = 100 + 10 * torch.sin(2 * math.pi * 0.3 * times)[:, None, None].expand(100, 5, 2)
    noisy = truth + 1.5 * torch.randn(truth.shape, generator=generator)
    smoothed = faces.smooth_track(noisy)
    jitter = lambda track: float((track - truth).diff(dim=0).std())  # noqa: E731
    assert jitter(smoothed) < 0.4 * jitter(noisy)
    assert float((smoothed - truth)[10:].abs().mean()) < float((noisy - truth).abs().mean())


def test_without_mediapipe_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(UsageError, match=r"mltk\[talk\]"):
        faces.FaceAnalyzer(MODELS)
