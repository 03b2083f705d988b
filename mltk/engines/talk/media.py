"""Video and audio in and out with PyAV: every clip read at 25 fps and 16 kHz mono, written as H.264 + AAC mp4.

The talking-head engine works on one time base: video frame ``k`` is shown at
``k / 25`` s and audio is 16 kHz mono, the rates Wav2Lip's sync expert and
most talking-face data (HDTF, VoxCeleb2 crops) use. Whatever a file holds is
brought to that base here, so nothing downstream sees another rate.

Frame-rate conversion is nearest frame by timestamp: output frame ``k`` is the
decoded frame whose presentation time (relative to the first frame) is
nearest ``k / 25`` s; ties go to the earlier frame. Nothing is blended, so
every output frame is a real frame of the clip (a 30 fps clip drops one frame
in six; a 22 fps one repeats some). The clip lasts from the first frame's
time to the last frame's time plus one source frame period, and holds every
output time inside that span.

Audio is decoded and resampled to 16 kHz mono float32 in [-1, 1] by PyAV's
``AudioResampler`` (ffmpeg's swresample; channels are averaged by its
downmix). Audio is placed on the video's clock: if its stream starts after
the first video frame, silence is put in front, if before, the lead is cut,
so sample ``n`` plays at ``n / 16000`` s after frame 0.

Decoding streams frame by frame: memory holds the output (and one frame of
look-ahead), never the whole decoded source at its own rate. ``iter_frames``
yields frames one at a time for callers that do not need the clip at once.

PyAV is an optional dependency (``pip install "mltk[talk]"``), imported only
when a file is read or written.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mltk.core.errors import ArtifactError, UsageError

VIDEO_FPS = 25
SAMPLE_RATE = 16_000
INSTALL_HINT = 'pip install "mltk[talk]" (or pip install av)'
# Constant rate factor of the H.264 encoder: 18 is visually near-lossless and
# keeps the round trip of generated frames within a few grey levels.
H264_CRF = 18
AAC_BIT_RATE = 64_000


def _av() -> Any:
    try:
        return importlib.import_module("av")
    except ImportError:
        raise UsageError("reading or writing video needs the optional extra mltk[talk]",
                         hint=INSTALL_HINT) from None


@dataclasses.dataclass(frozen=True)
class Clip:
    """A clip on the engine's time base.

    frames: uint8 [T, H, W, 3] RGB, frame ``k`` shown at ``k / fps`` s.
    audio: float32 [N] mono in [-1, 1] at ``sample_rate``; empty when the file has no audio track.
    """

    frames: torch.Tensor
    audio: torch.Tensor
    fps: int = VIDEO_FPS
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return self.frames.shape[0] / self.fps


def _open(path: Path) -> Any:
    av = _av()
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file", hint="check the path")
    try:
        return av.open(str(path))
    except av.FFmpegError as error:
        raise ArtifactError(f"{path}: cannot be decoded as audio or video ({error})",
                            hint="convert it with ffmpeg to mp4 or wav") from None


def _decode_error(path: Path, error: Exception) -> ArtifactError:
    return ArtifactError(f"{path}: decoding failed ({error})", hint="the file may be truncated; re-encode it")


def iter_frames(path: str | Path, fps: int = VIDEO_FPS) -> Iterator[np.ndarray]:
    """The video's frames at ``fps``, each uint8 [H, W, 3] RGB, nearest frame by timestamp (module docstring)."""
    path = Path(path)
    av = _av()
    with _open(path) as container:
        if not container.streams.video:
            raise ArtifactError(f"{path}: has no video track", hint="pass a video file (mp4, mkv, mov, ...)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        source_period = 1.0 / float(stream.average_rate or stream.guessed_rate or fps)
        decoded = _timed_frames(container.decode(stream), stream.time_base, source_period)
        try:
            yield from _nearest_frames(decoded, 1.0 / fps, source_period)
        except av.FFmpegError as error:
            raise _decode_error(path, error) from None


def _timed_frames(frames: Iterable[Any], time_base: Fraction, source_period: float
                  ) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds since the first frame, RGB array); a frame without a timestamp is one period after the last."""
    start = None
    time = -source_period
    for frame in frames:
        if frame.pts is None:
            time += source_period
        else:
            seconds = float(frame.pts * time_base)
            start = seconds if start is None else start
            time = seconds - start
        yield time, frame.to_ndarray(format="rgb24")


def _nearest_frames(timed: Iterator[tuple[float, np.ndarray]], period: float, source_period: float
                    ) -> Iterator[np.ndarray]:
    """Output frame k is the timed frame nearest k * period; one decoded frame of look-ahead."""
    previous: tuple[float, np.ndarray] | None = None
    output_index = 0
    for upcoming in timed:
        # Every output time before this frame's lies between `previous` and it: pick the nearer.
        while previous is not None and output_index * period < upcoming[0]:
            target = output_index * period
            yield previous[1] if target - previous[0] <= upcoming[0] - target else upcoming[1]
            output_index += 1
        previous = upcoming
    if previous is None:
        return
    end = previous[0] + source_period
    while output_index * period < end - 1e-9:
        yield previous[1]
        output_index += 1


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, *, align_to_video: bool = False) -> torch.Tensor:
    """The first audio track as float32 [N] mono at ``sample_rate``, any input rate or channel count resampled.

    ``align_to_video`` puts the samples on the first video frame's clock (module docstring).
    Raises ArtifactError naming the file when it has no audio track or no samples.
    """
    path = Path(path)
    av = _av()
    with _open(path) as container:
        if not container.streams.audio:
            raise ArtifactError(f"{path}: has no audio track", hint="pass a file with speech in it")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        audio_start = None
        try:
            for frame in container.decode(stream):
                if audio_start is None and frame.pts is not None:
                    audio_start = float(frame.pts * frame.time_base)
                chunks += [out.to_ndarray()[0] for out in resampler.resample(frame)]
            chunks += [out.to_ndarray()[0] for out in resampler.resample(None)]
        except av.FFmpegError as error:
            raise _decode_error(path, error) from None
        video_start = _first_video_time(container, path) if align_to_video and container.streams.video else None
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise ArtifactError(f"{path}: the audio track has no samples", hint="pass a file with speech in it")
    if video_start is not None and audio_start is not None:
        lead = round((audio_start - video_start) * sample_rate)
        samples = np.concatenate([np.zeros(lead, np.float32), samples]) if lead > 0 else samples[-lead:]
    return torch.from_numpy(np.clip(samples, -1.0, 1.0))


def _first_video_time(container: Any, path: Path) -> float:
    container.seek(0)
    stream = container.streams.video[0]
    for frame in container.decode(stream):
        if frame.pts is not None:
            return float(frame.pts * frame.time_base)
    raise ArtifactError(f"{path}: the video track has no frames", hint="re-encode the file")


def read_clip(path: str | Path, fps: int = VIDEO_FPS, sample_rate: int = SAMPLE_RATE) -> Clip:
    """Frames at ``fps`` and audio at ``sample_rate`` (empty when there is no audio track)."""
    path = Path(path)
    frames = list(iter_frames(path, fps))
    if not frames:
        raise ArtifactError(f"{path}: the video track has no frames", hint="re-encode the file")
    with _open(path) as container:
        has_audio = bool(container.streams.audio)
    audio = read_audio(path, sample_rate, align_to_video=True) if has_audio else torch.zeros(0)
    return Clip(torch.from_numpy(np.stack(frames)), audio, fps, sample_rate)


def write_video(path: str | Path, frames: torch.Tensor | Iterable[np.ndarray], audio: torch.Tensor | None = None,
                *, fps: int = VIDEO_FPS, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write an mp4: H.264 (yuv420p) video at ``fps`` with the mono ``audio`` muxed in as AAC.

    frames: uint8 [T, H, W, 3] RGB, or an iterable of [H, W, 3] arrays (encoded as they come, so a
    generator keeps memory bounded). Odd sizes gain one replicated row or column (yuv420p needs even ones).
    audio: float32 [N] in [-1, 1] at ``sample_rate``, or None for a silent video.
    The file appears only when complete: it is written beside ``path`` and renamed.
    """
    av = _av()
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise UsageError(f"{path}: the output must be an .mp4 file", hint="name it OUT.mp4")
    if not path.parent.is_dir():
        raise UsageError(f"{path}: folder {path.parent} does not exist", hint="create it or pick another path")
    try:
        handle, temporary = tempfile.mkstemp(suffix=".mp4", prefix=f".{path.stem}-", dir=path.parent)
    except OSError as error:
        raise UsageError(f"{path}: cannot be written ({error.strerror})", hint="pick a writable folder") from None
    os.close(handle)
    try:
        _encode(av, temporary, frames, audio, fps, sample_rate)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; the video is an ordinary file
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def _encode(av: Any, target: str, frames: torch.Tensor | Iterable[np.ndarray], audio: torch.Tensor | None,
            fps: int, sample_rate: int) -> None:
    with av.open(target, mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps, options={"crf": str(H264_CRF)})
        video.pix_fmt = "yuv420p"
        sound = None
        if audio is not None and audio.numel():
            sound = container.add_stream("aac", rate=sample_rate, layout="mono")
            sound.bit_rate = AAC_BIT_RATE
        count = 0
        for frame in (frames.numpy() if isinstance(frames, torch.Tensor) else frames):
            frame = _even(np.ascontiguousarray(frame, dtype=np.uint8))
            if count == 0:
                video.height, video.width = frame.shape[:2]
            packet_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            packet_frame.pts = count
            container.mux(video.encode(packet_frame))
            count += 1
        if count == 0:
            raise UsageError(f"{target}: no frames to write", hint="pass at least one frame")
        container.mux(video.encode(None))
        if sound is not None:
            _encode_audio(av, container, sound, audio, sample_rate)


def _encode_audio(av: Any, container: Any, sound: Any, audio: torch.Tensor, sample_rate: int) -> None:
    samples = audio.detach().to(torch.float32).clamp(-1, 1).cpu().numpy()
    # One second per frame: PyAV re-chunks to the encoder's frame size (1024 for AAC) itself.
    for start in range(0, samples.shape[0], sample_rate):
        chunk = av.AudioFrame.from_ndarray(samples[None, start:start + sample_rate], format="fltp", layout="mono")
        chunk.sample_rate = sample_rate
        chunk.pts = start
        chunk.time_base = Fraction(1, sample_rate)
        container.mux(sound.encode(chunk))
    container.mux(sound.encode(None))


def _even(frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    if height % 2 or width % 2:
        frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    return frame


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
