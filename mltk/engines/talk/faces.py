"""Faces in images and videos: the box, MediaPipe's 468-point mesh, and a crop aligned to one template.

Detection and landmarks run MediaPipe's own models through the ``mediapipe``
package's Tasks API (``FaceDetector``, ``FaceLandmarker``), loaded from local
files only (``mediapipe_models.py`` says how the staged 2022 models are made
loadable); nothing is downloaded. Landmarks are in pixels of the image they
were found in: x, y, and MediaPipe's relative depth z in the same scale as x.

Alignment is a similarity transform (rotation, uniform scale, translation;
no shear, so the face keeps its shape) fitted by least squares (Umeyama) from
three rigid points, the two eye centres (mean of each eye's contour) and the
nose tip, to fixed positions in the crop. The mouth is left out on purpose:
it moves with speech, and an alignment that followed it would shake the
whole crop with every syllable. The template comes from MediaPipe's
canonical face mesh (``canonical_face_model.obj``) seen from the front and
scaled so that forehead-to-chin (points 10 and 152) spans 62% of the crop,
centred: a loose, whole-face crop like the 256 px crops of VoxCeleb2 and HDTF.

Per-frame landmarks jitter by a pixel or two even on a still face; the
alignment of a video is computed from the track smoothed by a one-euro
filter (Casiez et al., CHI 2012): an exponential low-pass whose cutoff rises
with speed, so a still head is steadied and a turning one does not lag. The
landmarks returned in crop coordinates are the raw ones, mapped through the
smoothed transform, so lip motion (and the LMD metric on it) is not smoothed.

``mediapipe`` is an optional dependency (``pip install "mltk[talk]"``).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mltk.core.errors import ArtifactError, UsageError
from mltk.engines.talk import mediapipe_models

INSTALL_HINT = 'pip install "mltk[talk]" (or pip install mediapipe)'
MESH_POINTS = mediapipe_models.MESH_POINTS
# MediaPipe's face-mesh indices (FaceLandmarksConnections in mediapipe.tasks).
# "Right" is the subject's right, on the left of an unmirrored image.
MOUTH_LANDMARKS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185,
                   191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)
RIGHT_EYE_LANDMARKS = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246)
LEFT_EYE_LANDMARKS = (249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)
NOSE_TIP = 1
# Where the subject's right eye centre, left eye centre and nose tip go, as fractions of the crop side.
ALIGNMENT_TEMPLATE = torch.tensor([[0.3889, 0.3871], [0.6111, 0.3871], [0.5, 0.5196]])
DEFAULT_CROP = 256


class NoFaceFound(ArtifactError):
    """No face in an image or a video frame; the message names the file and the frame."""


def _mediapipe() -> types.SimpleNamespace:
    try:
        mediapipe = importlib.import_module("mediapipe")
        vision = importlib.import_module("mediapipe.tasks.python.vision")
        tasks = importlib.import_module("mediapipe.tasks.python")
        schemas = types.SimpleNamespace(
            tflite=importlib.import_module("mediapipe.tasks.metadata.schema_py_generated"),
            metadata=importlib.import_module("mediapipe.tasks.metadata.metadata_schema_py_generated"),
            flatbuffers=importlib.import_module("flatbuffers"))
        bundles = importlib.import_module("mediapipe.tasks.python.metadata.metadata_writers.model_asset_bundle_utils")
    except ImportError:
        raise UsageError("face detection needs the optional extra mltk[talk]", hint=INSTALL_HINT) from None
    return types.SimpleNamespace(mp=mediapipe, vision=vision, options=tasks.BaseOptions, schemas=schemas,
                                 bundles=bundles)


@dataclasses.dataclass(frozen=True)
class FaceBox:
    """box: (x0, y0, x1, y1) pixels; keypoints: [6, 2] pixels (eyes, nose tip, mouth, ear tragions); score in [0, 1]."""

    box: tuple[float, float, float, float]
    keypoints: torch.Tensor
    score: float


def _where(source: str | Path, frame_index: int | None) -> str:
    return f"{source}" + (f", frame {frame_index}" if frame_index is not None else "")


class FaceAnalyzer:
    """MediaPipe's face detector and face-mesh landmarker over RGB uint8 images [H, W, 3] (numpy or torch)."""

    def __init__(self, model_dir: str | Path | None = None, *, min_confidence: float = 0.5):
        self._api = _mediapipe()
        folder = mediapipe_models.find_model_folder(model_dir)
        api, vision = self._api, self._api.vision
        self._detector = vision.FaceDetector.create_from_options(vision.FaceDetectorOptions(
            base_options=api.options(model_asset_buffer=mediapipe_models.detector_model(folder, api.schemas)),
            min_detection_confidence=min_confidence))
        bundle = mediapipe_models.landmarker_bundle(folder, api.schemas, api.bundles)
        self._landmarker = vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
            base_options=api.options(model_asset_buffer=bundle), num_faces=1,
            min_face_detection_confidence=min_confidence, min_face_presence_confidence=min_confidence))

    def close(self) -> None:
        self._detector.close()
        self._landmarker.close()

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _image(self, image: np.ndarray | torch.Tensor) -> Any:
        array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {array.dtype} {array.shape}")
        return self._api.mp.Image(image_format=self._api.mp.ImageFormat.SRGB, data=np.ascontiguousarray(array))

    def detect(self, image: np.ndarray | torch.Tensor, *, source: str | Path = "image",
               frame_index: int | None = None) -> FaceBox:
        """The most confident face; NoFaceFound naming ``source`` (and the frame) when there is none."""
        height, width = np.shape(image)[:2]
        detections = self._detector.detect(self._image(image)).detections
        if not detections:
            raise NoFaceFound(f"{_where(source, frame_index)}: no face found",
                              hint="use an image with one frontal face, large enough to see the eyes")
        best = max(detections, key=lambda detection: detection.categories[0].score)
        box = best.bounding_box
        keypoints = torch.tensor([[point.x * width, point.y * height] for point in best.keypoints])
        return FaceBox((float(box.origin_x), float(box.origin_y), float(box.origin_x + box.width),
                        float(box.origin_y + box.height)), keypoints, float(best.categories[0].score))

    def landmarks(self, image: np.ndarray | torch.Tensor, *, source: str | Path = "image",
                  frame_index: int | None = None) -> torch.Tensor:
        """[468, 3] face-mesh points in pixels (x, y, and depth z in x's scale)."""
        height, width = np.shape(image)[:2]
        faces = self._landmarker.detect(self._image(image)).face_landmarks
        if not faces:
            raise NoFaceFound(f"{_where(source, frame_index)}: no face found",
                              hint="use an image with one frontal face, large enough to see the eyes")
        points = torch.tensor([[point.x, point.y, point.z] for point in faces[0][:MESH_POINTS]])
        return points * torch.tensor([width, height, width], dtype=points.dtype)

    def track(self, frames: torch.Tensor, *, source: str | Path = "video") -> torch.Tensor:
        """frames: uint8 [T, H, W, 3] -> raw landmarks [T, 468, 3]; NoFaceFound names the first faceless frame."""
        return torch.stack([self.landmarks(frame, source=source, frame_index=index)
                            for index, frame in enumerate(frames)])


def alignment_points(landmarks: torch.Tensor) -> torch.Tensor:
    """[..., 468, >=2] -> [..., 3, 2]: right eye centre, left eye centre, nose tip (the template's order)."""
    xy = landmarks[..., :2]
    return torch.stack([xy[..., list(RIGHT_EYE_LANDMARKS), :].mean(-2), xy[..., list(LEFT_EYE_LANDMARKS), :].mean(-2),
                        xy[..., NOSE_TIP, :]], dim=-2)


def similarity_transform(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[2, 3] matrix M minimising sum |M [p; 1] - q|^2 over point pairs [K, 2], M a similarity (Umeyama 1991)."""
    source, target = source.to(torch.float64), target.to(torch.float64)
    source_mean, target_mean = source.mean(0), target.mean(0)
    centred_source, centred_target = source - source_mean, target - target_mean
    covariance = centred_target.T @ centred_source / source.shape[0]
    u, singular, vh = torch.linalg.svd(covariance)
    sign = torch.ones(2, dtype=torch.float64)
    if torch.det(u @ vh) < 0:  # a reflection fits better; a face must not be mirrored
        sign[1] = -1.0
    rotation = u @ torch.diag(sign) @ vh
    scale = (singular * sign).sum() / centred_source.pow(2).sum(1).mean()
    translation = target_mean - scale * rotation @ source_mean
    return torch.cat([scale * rotation, translation[:, None]], dim=1).to(torch.float32)


def apply_transform(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Map [..., 2 or 3] points by a [2, 3] similarity; a z column is scaled by the same factor."""
    xy = points[..., :2] @ matrix[:, :2].T + matrix[:, 2]
    if points.shape[-1] == 2:
        return xy
    scale = torch.linalg.det(matrix[:, :2]).abs().sqrt()
    return torch.cat([xy, points[..., 2:] * scale], dim=-1)


def warp(image: torch.Tensor, matrix: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [H, W, 3] -> uint8 [size, size, 3]: crop pixel (u, v) is image point M^-1 (u, v), bilinear, edges repeated."""
    height, width = image.shape[:2]
    full = torch.cat([matrix.to(torch.float64), torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)])
    inverse = torch.linalg.inv(full)[:2]
    v, u = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                          indexing="ij")
    source = torch.stack([u, v], -1) @ inverse[:, :2].T + inverse[:, 2]
    grid = torch.stack([2 * source[..., 0] / max(width - 1, 1) - 1, 2 * source[..., 1] / max(height - 1, 1) - 1],
                       -1)
    pixels = image.permute(2, 0, 1)[None].to(torch.float32)
    out = torch.nn.functional.grid_sample(pixels, grid[None].to(torch.float32), mode="bilinear",
                                          padding_mode="border", align_corners=True)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)


def template_pixels(size: int = DEFAULT_CROP) -> torch.Tensor:
    """[3, 2] the template's points in pixels of a ``size`` crop."""
    return ALIGNMENT_TEMPLATE * (size - 1)


@dataclasses.dataclass(frozen=True)
class AlignedFaces:
    """crops: uint8 [T, S, S, 3]; landmarks: [T, 468, 3] in crop pixels; matrices: [T, 2, 3] image -> crop."""

    crops: torch.Tensor
    landmarks: torch.Tensor
    matrices: torch.Tensor


def align(frames: torch.Tensor, landmarks: torch.Tensor, *, size: int = DEFAULT_CROP,
          smooth: bool = True, fps: float = 25.0) -> AlignedFaces:
    """Crop and align every frame [T, H, W, 3] with its landmarks [T, 468, 3] (one image: T = 1).

    The transforms come from the one-euro-smoothed track when ``smooth``; the landmarks returned are
    the raw ones mapped into the crop.
    """
    steady = smooth_track(landmarks, fps=fps) if smooth and landmarks.shape[0] > 1 else landmarks
    target = template_pixels(size)
    matrices = torch.stack([similarity_transform(points, target) for points in alignment_points(steady)])
    crops = torch.stack([warp(frame, matrix, size) for frame, matrix in zip(frames, matrices, strict=True)])
    mapped = torch.stack([apply_transform(matrix, points) for matrix, points in zip(matrices, landmarks,
                                                                                    strict=True)])
    return AlignedFaces(crops, mapped, matrices)


def smooth_track(track: torch.Tensor, *, fps: float = 25.0, min_cutoff: float = 1.0, beta: float = 0.05,
                 derivative_cutoff: float = 1.0) -> torch.Tensor:
    """One-euro filter along time of a track [T, ...] (pixels): causal, every coordinate independently.

    min_cutoff (Hz) sets how much a still point is steadied, beta (per pixel/s) how fast the cutoff
    rises with speed, derivative_cutoff (Hz) smooths the speed estimate (Casiez et al. 2012).
    """

    def smoothing_factor(cutoff: torch.Tensor | float) -> torch.Tensor | float:
        time_constant = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + time_constant * fps)

    track = track.to(torch.float32)
    smoothed = [track[0]]
    speed = torch.zeros_like(track[0])
    derivative_factor = smoothing_factor(derivative_cutoff)
    for frame in track[1:]:
        raw_speed = (frame - smoothed[-1]) * fps
        speed = derivative_factor * raw_speed + (1 - derivative_factor) * speed
        factor = smoothing_factor(min_cutoff + beta * speed.abs())
        smoothed.append(factor * frame + (1 - factor) * smoothed[-1])
    return torch.stack(smoothed)
