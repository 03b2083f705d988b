"""Talking-face clips prepared for training and evaluation: aligned face crops, one mel window per frame, audio.

Two data specs:

* ``talking-head``: the six real clips of ``$MLTK_DATA/talking_head`` (SadTalker's and video-retalking's
  examples; ``/work/shared/data/MANIFEST.md`` §7). A clip's speaker is its collection and file stem
  (``videoretalking_examples/5``), except that ``videoretalking_examples/face/3.mp4`` shows the same
  person as SadTalker's ``WDA_AlexandriaOcasioCortez_000.mp4`` (seen on the frames; the manifest counts
  six speakers, there are five) and is labelled as that speaker, so she is never on both sides.
* ``video-folder:PATH``: every ``.mp4`` under PATH, for VoxCeleb2 or HDTF. A file in a subfolder belongs
  to the speaker named by the first folder below PATH (VoxCeleb2's ``id00012/<video>/00001.mp4``); a file
  directly in PATH is its own speaker (HDTF's one-video-per-speaker layout).

The split is by speaker, so the held-out clips show faces never seen in training (the one-shot setting):
speakers are sorted by name and the last ``held_out_speakers`` of them are held out. Deterministic, and
the same on every machine.

Preparing a clip (``alignment="mediapipe"``): the video is decoded twice, streaming, at 25 fps
(``media.iter_frames``). Pass one finds MediaPipe's 468 landmarks in every frame; the track is smoothed
(``faces.smooth_track``, one-euro) and each frame's similarity transform to the template is fitted on the
smoothed track. Pass two warps each frame into an ``size`` crop. Memory holds the crops and the landmark
track, never the decoded full-size video, so long clips cost what their crops cost. The landmarks kept
are the raw per-frame ones mapped through the smoothed transform (``faces.align``'s convention): the crop
is steady, the lips are not smoothed, and LMD on them measures the real mouth.

Frames where no face is found: at the start or the end of a clip they are dropped (with their audio)
and a warning says how many; a faceless frame between faces makes the whole clip unusable (its motion
would jump), so the clip is skipped with a warning naming the file and the frame. A video without an
audio track, or whose audio has no samples, is skipped with a warning naming it. A folder left without
any usable clip is an error naming the folder.

``alignment="none"`` skips face detection: each frame is centre-cropped to a square and resized (for
data that is already aligned, like HDTF's crops, and for the synthetic test clips); ``landmarks`` is None.

Prepared clips are cached as safetensors under ``cache_dir`` (default ``$MLTK_HOME/cache/talk``), keyed
by the file's SHA-256, the crop size, the alignment and the preparation version, so a second run reads
them back without running MediaPipe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mltk.core.errors import ArtifactError, DataMissingError, UsageError
from mltk.core.paths import data_root, mltk_home
from mltk.engines.talk import audio as speech
from mltk.engines.talk import faces, media

TALKING_HEAD_SPEC = "talking-head"
TALKING_HEAD_FOLDER = "talking_head"
VIDEO_FOLDER_PREFIX = "video-folder:"
ALIGNMENTS = ("mediapipe", "none")
SAMPLES_PER_FRAME = media.SAMPLE_RATE // media.VIDEO_FPS  # 640
# Bump when the preparation changes what it writes, so old cache entries are not read back.
PREPARATION_VERSION = 1
# The lower face in an aligned crop, (left, top, right, bottom) as fractions of the side: from the nose
# tip (0.52 of the height with faces.ALIGNMENT_TEMPLATE) to below the chin (about 0.80), and the middle
# 40% of the width. MediaPipe's 40 lip points fall inside it on the six shared clips (x 0.39-0.62,
# y 0.59-0.73). Square, so a mouth crop is not stretched.
MOUTH_REGION = (0.3, 0.5, 0.7, 0.9)
# talking-head clips showing a speaker of another clip (checked by eye on the frames), by speaker label.
TALKING_HEAD_SAME_PERSON = {"videoretalking_examples/3": "sadtalker_examples/WDA_AlexandriaOcasioCortez_000"}


class TalkDataWarning(UserWarning):
    """A clip (or some of its frames) left out of the prepared data; the message names the file."""


@dataclasses.dataclass
class TalkingClip:
    """One prepared clip on the engine's time base (25 fps, 16 kHz), frame ``k`` at ``k / 25`` s.

    faces: uint8 [T, 3, S, S] aligned face crops.
    mels: float32 [T, 16, 80], frame k's log-mel window centred on it (``audio.mel_windows``).
    landmarks: float32 [T, 468, 2] MediaPipe points in crop pixels; None with ``alignment="none"``.
    audio: float32 [T * 640] 16 kHz mono, sample ``n`` at ``n / 16000`` s after frame 0.
    """

    name: str
    speaker: str
    faces: torch.Tensor
    mels: torch.Tensor
    landmarks: torch.Tensor | None
    audio: torch.Tensor

    @property
    def num_frames(self) -> int:
        return int(self.faces.shape[0])


@dataclasses.dataclass
class TalkingData:
    """Clips split by speaker: no speaker of ``held_out`` appears in ``train``."""

    train: list[TalkingClip]
    held_out: list[TalkingClip]
    source: str

    @property
    def train_speakers(self) -> list[str]:
        return sorted({clip.speaker for clip in self.train})

    @property
    def held_out_speakers(self) -> list[str]:
        return sorted({clip.speaker for clip in self.held_out})


@dataclasses.dataclass(frozen=True)
class VideoFile:
    path: Path
    name: str
    speaker: str


def mouth_crops(faces: torch.Tensor, size: int) -> torch.Tensor:
    """Aligned faces uint8 [T, 3, S, S] -> the lower face (``MOUTH_REGION``) as float [T, 3, size, size] in [0, 1]."""
    side = faces.shape[-1]
    left, top, right, bottom = (round(fraction * side) for fraction in MOUTH_REGION)
    region = faces[..., top:bottom, left:right].to(torch.float32) / 255.0
    resized = F.interpolate(region, size=(size, size), mode="bilinear", align_corners=False,
                            antialias=region.shape[-1] > size)
    return resized.clamp(0.0, 1.0)


# --- which files, which speakers ---------------------------------------------------------------------

def list_videos(spec: str, *, data_dir: str | Path | None = None) -> tuple[Path, list[VideoFile]]:
    """(the folder, its mp4 files with names and speakers, sorted) for ``talking-head`` or ``video-folder:PATH``."""
    if spec == TALKING_HEAD_SPEC:
        folder = (Path(data_dir).expanduser() if data_dir else data_root()) / TALKING_HEAD_FOLDER
        if not folder.is_dir():
            raise DataMissingError(f"talking-head data: {folder} does not exist",
                                   hint="set MLTK_DATA to the folder holding talking_head/ "
                                        "(e.g. /work/shared/data), or use video-folder:PATH")
    elif spec.startswith(VIDEO_FOLDER_PREFIX):
        folder = Path(spec.removeprefix(VIDEO_FOLDER_PREFIX)).expanduser()
        if not folder.is_dir():
            raise DataMissingError(f"{spec}: folder {folder} does not exist", hint="pass video-folder:PATH")
    else:
        raise UsageError(f"unknown talking-face data {spec!r}",
                         hint=f"use {TALKING_HEAD_SPEC} or {VIDEO_FOLDER_PREFIX}PATH (a folder of mp4 files)")
    paths = sorted(path for path in folder.rglob("*") if path.suffix.lower() == ".mp4" and path.is_file())
    if not paths:
        raise DataMissingError(f"{folder}: holds no .mp4 file", hint="put talking-face videos (mp4) in it")
    return folder, [_video_file(folder, path, spec == TALKING_HEAD_SPEC) for path in paths]


def _video_file(folder: Path, path: Path, by_collection: bool) -> VideoFile:
    relative = path.relative_to(folder)
    name = relative.with_suffix("").as_posix()
    if by_collection:  # talking_head/<collection>/<kind>/<stem>.mp4: one speaker per clip
        speaker = f"{relative.parts[0]}/{path.stem}" if len(relative.parts) > 1 else path.stem
        speaker = TALKING_HEAD_SAME_PERSON.get(speaker, speaker)
    else:
        speaker = relative.parts[0] if len(relative.parts) > 1 else path.stem
    return VideoFile(path, name, speaker)


def split_by_speaker(videos: list[VideoFile], held_out_speakers: int) -> tuple[list[VideoFile], list[VideoFile]]:
    """(train, held out): the last ``held_out_speakers`` speakers in sorted order are held out."""
    speakers = sorted({video.speaker for video in videos})
    if held_out_speakers < 0 or (held_out_speakers and held_out_speakers >= len(speakers)):
        raise UsageError(f"cannot hold out {held_out_speakers} of {len(speakers)} speaker(s) and still train",
                         hint="add videos of more speakers or hold out fewer")
    held = set(speakers[len(speakers) - held_out_speakers:]) if held_out_speakers else set()
    return ([video for video in videos if video.speaker not in held],
            [video for video in videos if video.speaker in held])


# --- loading -----------------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    return mltk_home() / "cache" / "talk"


def load_talking_data(spec: str, *, size: int, held_out_speakers: int = 1, alignment: str = "mediapipe",
                      cache_dir: str | Path | None = None, data_dir: str | Path | None = None,
                      warn: Callable[[str], None] | None = None,
                      progress: Callable[[str], None] | None = None) -> TalkingData:
    """Prepared clips of ``spec`` split by speaker (module docstring). ``warn`` receives each skipped clip's
    message (default: a ``TalkDataWarning``); ``progress`` one line per clip prepared (not per cache hit)."""
    if alignment not in ALIGNMENTS:
        raise UsageError(f"alignment {alignment!r} is not one of {', '.join(ALIGNMENTS)}")
    if size < 8:
        raise UsageError(f"crop size {size} is too small", hint="use at least 8 pixels")
    folder, videos = list_videos(spec, data_dir=data_dir)
    train_files, held_files = split_by_speaker(videos, held_out_speakers)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    preparer = _Preparer(size, alignment, cache, warn or _warn, progress)
    try:
        train = [clip for clip in map(preparer.clip, train_files) if clip is not None]
        held_out = [clip for clip in map(preparer.clip, held_files) if clip is not None]
    finally:
        preparer.close()
    if not train and not held_out:
        raise DataMissingError(f"{folder}: no usable clip (each needs a video track with a face and an audio track)",
                               hint="see the warnings above for why each file was skipped")
    if not train or (held_out_speakers and not held_out):
        side = "training" if not train else "held-out"
        raise DataMissingError(f"{folder}: no usable {side} clip is left after skipping unusable files",
                               hint="see the warnings above; add usable videos or change held_out_speakers")
    return TalkingData(train, held_out, spec)


def _warn(message: str) -> None:
    warnings.warn(message, TalkDataWarning, stacklevel=3)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Preparer:
    """Prepares clips one by one; the face analyzer is started only when a clip is not cached."""

    def __init__(self, size: int, alignment: str, cache: Path, warn: Callable[[str], None],
                 progress: Callable[[str], None] | None):
        self.size, self.alignment, self.cache = size, alignment, cache
        self.warn, self.progress = warn, progress
        self._analyzer: faces.FaceAnalyzer | None = None

    def close(self) -> None:
        if self._analyzer is not None:
            self._analyzer.close()

    def analyzer(self) -> faces.FaceAnalyzer:
        if self._analyzer is None:
            self._analyzer = faces.FaceAnalyzer()
        return self._analyzer

    def cache_path(self, video: VideoFile) -> Path:
        key = f"{file_digest(video.path)[:24]}-s{self.size}-{self.alignment}-v{PREPARATION_VERSION}"
        return self.cache / f"{key}.safetensors"

    def clip(self, video: VideoFile) -> TalkingClip | None:
        cached = self.cache_path(video)
        tensors = _read_cache(cached)
        if tensors is None:
            tensors = self.prepare(video)
            if tensors is None:
                return None
            _write_cache(cached, tensors, video)
            if self.progress:
                self.progress(f"prepared {video.name}: {tensors['faces'].shape[0]} frames")
        return TalkingClip(video.name, video.speaker, tensors["faces"], tensors["mels"], tensors.get("landmarks"),
                           tensors["audio"])

    def prepare(self, video: VideoFile) -> dict[str, torch.Tensor] | None:
        sound = self.read_sound(video.path)
        if sound is None:
            return None
        if self.alignment == "none":
            crops = torch.stack([_square_resize(frame, self.size) for frame in media.iter_frames(video.path)])
            first, landmarks = 0, None
        else:
            found = self.align(video.path)
            if found is None:
                return None
            first, crops, landmarks = found
        count = crops.shape[0]
        mel = speech.log_mel(sound)
        frames_in_audio = first + count
        windows = speech.mel_windows(mel, frames_in_audio)[first:]
        clip_audio = sound[first * SAMPLES_PER_FRAME:(first + count) * SAMPLES_PER_FRAME]
        clip_audio = F.pad(clip_audio, (0, count * SAMPLES_PER_FRAME - clip_audio.shape[0]))
        tensors = {"faces": crops.permute(0, 3, 1, 2).contiguous(), "mels": windows.contiguous(),
                   "audio": clip_audio.contiguous()}
        if landmarks is not None:
            tensors["landmarks"] = landmarks.contiguous()
        return tensors

    def read_sound(self, path: Path) -> torch.Tensor | None:
        """The audio on the video's clock, or None (warned) when there is no audio track or no samples."""
        try:
            return media.read_audio(path, align_to_video=True)
        except ArtifactError as error:
            if not (error.message.endswith("has no audio track") or error.message.endswith("has no samples")):
                raise
            self.warn(f"{path}: skipped: {error.message.removeprefix(f'{path}: ')}")
            return None

    def align(self, path: Path) -> tuple[int, torch.Tensor, torch.Tensor] | None:
        """(first kept frame, crops uint8 [T, S, S, 3], landmarks [T, 468, 2]) or None (warned)."""
        analyzer = self.analyzer()
        found: list[torch.Tensor | None] = []
        for index, frame in enumerate(media.iter_frames(path)):
            try:
                found.append(analyzer.landmarks(frame, source=path, frame_index=index))
            except faces.NoFaceFound:
                found.append(None)
        with_face = [index for index, points in enumerate(found) if points is not None]
        if not with_face:
            self.warn(f"{path}: skipped: no face found in any of its {len(found)} frames")
            return None
        first, last = with_face[0], with_face[-1]
        gaps = [index for index in range(first, last + 1) if found[index] is None]
        if gaps:
            self.warn(f"{path}: skipped: no face found in frame {gaps[0]} (between frames with faces; "
                      f"{len(gaps)} such frame(s))")
            return None
        if first > 0 or last < len(found) - 1:
            self.warn(f"{path}: dropped {first} frame(s) at the start and {len(found) - 1 - last} at the end "
                      "where no face was found")
        track = torch.stack(found[first:last + 1])  # type: ignore[arg-type]
        steady = faces.smooth_track(track) if track.shape[0] > 1 else track
        target = faces.template_pixels(self.size)
        matrices = torch.stack([faces.similarity_transform(points, target)
                                for points in faces.alignment_points(steady)])
        crops = [faces.warp(torch.from_numpy(frame), matrices[index - first], self.size)
                 for index, frame in enumerate(media.iter_frames(path)) if first <= index <= last]
        if len(crops) != track.shape[0]:
            raise ArtifactError(f"{path}: decoded {len(crops)} frames the second time, {len(found)} the first",
                                hint="the file may be damaged; re-encode it")
        landmarks = torch.stack([faces.apply_transform(matrix, points[:, :2])
                                 for matrix, points in zip(matrices, track, strict=True)])
        return first, torch.stack(crops), landmarks.to(torch.float32)


def _square_resize(frame: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [H, W, 3] -> the centred square, resized to uint8 [size, size, 3]."""
    height, width = frame.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = torch.from_numpy(np.ascontiguousarray(frame[top:top + side, left:left + side]))
    if side == size:
        return square
    pixels = square.permute(2, 0, 1)[None].to(torch.float32)
    resized = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size)
    return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)


def _read_cache(path: Path) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        return None  # a damaged entry is prepared again and overwritten


def _write_cache(path: Path, tensors: dict[str, torch.Tensor], video: VideoFile) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".partial")
    save_file(tensors, str(temporary), metadata={"source": str(video.path), "version": str(PREPARATION_VERSION)})
    temporary.replace(path)


# --- synthetic clips for tests -----------------------------------------------------------------------

SYNTHETIC_TONES_HZ = (220.0, 330.0, 440.0, 550.0)


def write_synthetic_talking_folder(folder: str | Path, *, clips: int = 2, seconds: float = 1.0, size: int = 32,
                                   seed: int = 0) -> Path:
    """Write ``clips`` tiny mp4s with audio into ``folder`` (``speaker<i>.mp4``, one speaker each); returns it.

    No real face (use ``alignment="none"``): a coloured square (the head) drifting a little on grey, with
    a dark bar (the mouth) inside ``MOUTH_REGION`` whose height follows the loudness of the sound, a tone
    (each speaker its own pitch) plus noise. Loudness
    changes every 2-6 frames at random, so the mouth and the sound are in sync only at the true offset:
    a sync expert can learn it, and a shifted audio track is detectably out of sync.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(seed)
    num_frames = max(1, round(seconds * media.VIDEO_FPS))
    for index in range(clips):
        openings = _syllables(num_frames, generator)
        frames = np.stack([_synthetic_frame(size, frame, opening, index) for frame, opening in enumerate(openings)])
        sound = _synthetic_sound(openings, SYNTHETIC_TONES_HZ[index % len(SYNTHETIC_TONES_HZ)], generator)
        media.write_video(folder / f"speaker{index}.mp4", torch.from_numpy(frames), sound)
    return folder


def _syllables(num_frames: int, generator: np.random.Generator) -> np.ndarray:
    """[T] mouth opening in [0, 1] per frame, piecewise constant over runs of 2-6 frames."""
    levels = []
    while len(levels) < num_frames:
        levels += [float(generator.choice([0.0, 0.35, 0.7, 1.0]))] * int(generator.integers(2, 7))
    return np.asarray(levels[:num_frames], np.float32)


def _synthetic_frame(size: int, frame: int, opening: float, speaker: int) -> np.ndarray:
    image = np.full((size, size, 3), 90, np.uint8)
    drift = round(math.sin(frame / 6.0) * size / 32)
    colour = np.array([200 - 30 * speaker % 120, 150 + 20 * speaker % 90, 120], np.uint8)
    image[size // 8:size - size // 16, size // 8 + drift:size - size // 8 + drift] = colour
    centre_x, top = size // 2 + drift, round(0.62 * size)
    height = 1 + round(opening * 0.18 * size)
    image[top:top + height, centre_x - size // 8:centre_x + size // 8] = 20
    return image


def _synthetic_sound(openings: np.ndarray, tone_hz: float, generator: np.random.Generator) -> torch.Tensor:
    """A tone (the speaker's pitch) plus white noise (broadband, like breath and fricatives, the same for every
    speaker), loud as each frame's mouth opening (5 ms ramps between frames, so no clicks)."""
    envelope = np.repeat(0.02 + 0.6 * openings, SAMPLES_PER_FRAME).astype(np.float64)
    ramp = int(0.005 * media.SAMPLE_RATE)
    envelope = np.convolve(np.pad(envelope, ramp, mode="edge"), np.ones(ramp) / ramp, mode="same")[ramp:-ramp]
    times = np.arange(envelope.shape[0]) / media.SAMPLE_RATE
    voice = 0.6 * np.sin(2 * np.pi * tone_hz * times) + 0.4 * generator.uniform(-1, 1, times.shape[0])
    return torch.from_numpy((envelope * voice).astype(np.float32))
