"""Frames from a trained model: a source face, speech, and motion from the prior or from a driving clip.

Everything here works a batch of frames at a time, so memory is bounded by
``batch_frames`` whatever the length of the audio: mel windows are cut per
batch from the log-mel spectrogram, the prior is sampled per batch with its
GRU state carried over (the same draws as one long call), and the frames of
each batch are handed out before the next is made.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mltk.engines.talk import audio as speech
from mltk.engines.talk.adaptation import SourceIdentity
from mltk.engines.talk.encoders import resize_faces, to_uint8
from mltk.engines.talk.model import StyleTalkerModel

BATCH_FRAMES = 32


def frame_windows(mel: torch.Tensor, first: int, count: int) -> torch.Tensor:
    """Mel windows [count, 16, 80] of video frames ``first .. first + count - 1`` (what ``mel_windows`` gives for
    those rows, without making the others)."""
    starts = speech.window_starts(first + count)[first:]
    rows = starts[:, None] + torch.arange(speech.WINDOW_MEL_FRAMES)[None, :]
    inside = (rows >= 0) & (rows < mel.shape[0])
    gathered = mel[rows.clamp(0, max(mel.shape[0] - 1, 0))]
    return torch.where(inside[..., None], gathered, torch.full_like(gathered, speech.SILENCE))


def face_tensor(image: torch.Tensor, resolution: int) -> torch.Tensor:
    """An aligned face crop, uint8 [3, S, S] or [S, S, 3] (or float in [-1, 1] [3, S, S]) -> float [1, 3, R, R]."""
    if image.dim() != 3:
        raise ValueError(f"expected one face crop [3, S, S] or [S, S, 3], got shape {tuple(image.shape)}")
    if image.shape[0] != 3 and image.shape[-1] == 3:
        image = image.permute(2, 0, 1)
    face = image.float().div(127.5).sub(1.0) if image.dtype == torch.uint8 else image.float()
    return resize_faces(face[None], resolution)


def clip_faces(faces: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 [T, 3, S, S] -> float [T, 3, R, R] in [-1, 1]."""
    return resize_faces(faces.float().div(127.5).sub(1.0), resolution)


@torch.no_grad()
def posterior_motion(model: StyleTalkerModel, faces: torch.Tensor, mels: torch.Tensor, reference: torch.Tensor, *,
                     batch_frames: int = BATCH_FRAMES) -> tuple[torch.Tensor, torch.Tensor]:
    """A clip's motion latents under the posterior: faces uint8 [T, 3, S, S], mels [T, 16, 80], reference
    float [1, 3, R, R] -> (mean, log sigma) [T, M]. The encoders run per batch; the BiGRU reads the whole clip."""
    device = next(model.parameters()).device
    resolution = model.spec.resolution
    w_id = model.identity(reference.to(device))
    poses, audio = [], []
    for first in range(0, faces.shape[0], batch_frames):
        frames = clip_faces(faces[first:first + batch_frames], resolution).to(device)
        poses.append(model.pose_latents(frames))
        audio.append(model.audio_encoder(mels[first:first + batch_frames].to(device)))
    mean, log_sigma = model.posterior(torch.cat(poses)[None] - w_id[:, None], torch.cat(audio)[None])
    return mean[0], log_sigma[0]


def ping_pong(motion: torch.Tensor, length: int) -> torch.Tensor:
    """motion [T, M] -> [length, M]: played forwards, then backwards, ... (a driving clip shorter than the audio
    keeps moving smoothly instead of jumping back to its first frame)."""
    if motion.shape[0] >= length or motion.shape[0] == 1:
        return motion[:length] if motion.shape[0] >= length else motion.expand(length, -1)
    cycle = torch.cat([motion, motion.flip(0)[1:-1]]) if motion.shape[0] > 2 else motion
    repeats = -(-length // cycle.shape[0])
    return cycle.repeat(repeats, 1)[:length]


@torch.no_grad()
def generate(model: StyleTalkerModel, identity: SourceIdentity, waveform: torch.Tensor, *,
             motion: torch.Tensor | None = None, prior: str | None = None, seed: int = 0,
             batch_frames: int = BATCH_FRAMES, keep_motion: list | None = None) -> Iterator[torch.Tensor]:
    """Frames of the source face ``identity`` (``adaptation.source_identity``) speaking ``waveform`` (float [N],
    16 kHz): uint8 [B, R, R, 3] batches, ``audio.frame_count(N)`` frames in all.

    ``motion`` [T', M] drives the head (from a clip's posterior; repeated back and forth to the audio's length);
    without it motion is sampled from ``prior`` (default: the model's) with ``seed``. ``keep_motion``, when
    given, receives each batch's motion latents.
    """
    device = next(model.parameters()).device
    total = speech.frame_count(waveform.shape[0])
    mel = speech.log_mel(waveform.cpu())
    sampler = model.priors[prior or model.spec.prior]
    generator = torch.Generator().manual_seed(int(seed))
    if motion is not None:
        motion = ping_pong(motion, total)
    carry = None
    for first in range(0, total, batch_frames):
        count = min(batch_frames, total - first)
        audio = model.audio_encoder(frame_windows(mel, first, count).to(device))[None]  # [1, B, A]
        if motion is None:
            batch_motion, carry = sampler.sample(audio, generator=generator, carry=carry)
        else:
            batch_motion = motion[first:first + count].to(device)[None]
        if keep_motion is not None:
            keep_motion.append(batch_motion[0].cpu())
        yield identity.frames(model, batch_motion, audio)


def static_frames(source: torch.Tensor, waveform: torch.Tensor, *, batch_frames: int = BATCH_FRAMES
                  ) -> Iterator[torch.Tensor]:
    """The static baseline: the source face, unmoving, as many frames as the audio spans."""
    total = speech.frame_count(waveform.shape[0])
    frame = to_uint8(source.clamp(-1, 1))[0]
    for first in range(0, total, batch_frames):
        yield frame[None].expand(min(batch_frames, total - first), -1, -1, -1).clone()
