"""``Talker``: a trained talking-head model as a Python object, and ``talk``, what ``mltk talk`` runs.

::

    talker = load_talker("styletalker")                       # registry reference or exported folder
    for frames in talker.generate(face_crop, speech):        # uint8 [B, R, R, 3] batches
        ...
    talk("face.png", "speech.wav", "out.mp4")                 # align, generate, write mp4 + contact sheet

``generate`` takes motion from the prior (audio-driven; ``prior`` picks the
flow or the Gaussian one, ``seed`` the draw), from a driving clip
(``motion_from``: its posterior motion, played back and forth to the audio's
length) or none at all (``static``: the source face unmoving, the baseline).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mltk.core.device import resolve_device
from mltk.core.errors import ArtifactError, UsageError
from mltk.core.registry import Registry
from mltk.engines.talk import audio as speech
from mltk.engines.talk import faces, media
from mltk.engines.talk.adaptation import Adaptation, SourceIdentity, source_identity
from mltk.engines.talk.artifact import latest_talker, load_model
from mltk.engines.talk.data import TalkingClip, load_talking_data
from mltk.engines.talk.inference import (
    BATCH_FRAMES,
    clip_faces,
    face_tensor,
    generate,
    posterior_motion,
    static_frames,
)
from mltk.engines.talk.model import StyleTalkerModel

CONTACT_SHEET_FRAMES = 8


class Talker:
    """A trained model ready to make frames (eval mode, on its device)."""

    def __init__(self, model: StyleTalkerModel, *, source: str, card: dict, batch_frames: int = BATCH_FRAMES):
        self.model = model
        self.source = source
        self.card = card
        self.batch_frames = batch_frames

    @property
    def resolution(self) -> int:
        return self.model.spec.resolution

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _prior(self, prior: str | None) -> str:
        prior = prior or self.model.spec.prior
        if prior not in self.model.priors:
            raise UsageError(f"prior {prior!r} is not one of {', '.join(self.model.priors)}")
        return prior

    def adapt(self, source_image: torch.Tensor, adaptation: Adaptation | None = Adaptation()) -> SourceIdentity:
        """The aligned face ``source_image`` (uint8 [3, S, S] or [S, S, 3]) with the generator fitted to it
        (``adaptation.py``; None: the model as trained). Fit once, pass it as ``identity`` to ``generate`` and
        ``reconstruct`` for every audio of that face."""
        return source_identity(self.model, face_tensor(source_image, self.resolution).to(self.device), adaptation)

    def generate(self, source_image: torch.Tensor, audio: torch.Tensor, *, motion_from: TalkingClip | None = None,
                 seed: int = 0, prior: str | None = None, static: bool = False,
                 adaptation: Adaptation | None = Adaptation(), identity: SourceIdentity | None = None,
                 on_batch: Callable[[int, int], None] | None = None,
                 keep_motion: list | None = None) -> Iterator[torch.Tensor]:
        """Frames of the aligned face ``source_image`` (uint8 [3, S, S] or [S, S, 3]) speaking ``audio`` (float
        [N], 16 kHz mono): uint8 [B, R, R, 3] batches, ``audio.frame_count(N)`` frames in all. The generator is
        first adapted to the face (``adaptation.py``; ``adaptation=None`` renders with the model as trained),
        unless ``identity`` (from :meth:`adapt`) is given. ``on_batch(done, total)`` is called after each batch;
        ``keep_motion`` (a list) receives each batch's motion latents."""
        if audio.dim() != 1 or audio.numel() == 0:
            raise UsageError(f"audio must be mono samples [N] with N > 0, got shape {tuple(audio.shape)}")
        source = face_tensor(source_image, self.resolution)
        total = speech.frame_count(audio.shape[0])
        if static:
            batches = static_frames(source, audio, batch_frames=self.batch_frames)
        else:
            motion = None
            if motion_from is not None:
                reference = clip_faces(motion_from.faces[:1], self.resolution)
                motion, _ = posterior_motion(self.model, motion_from.faces, motion_from.mels, reference,
                                             batch_frames=self.batch_frames)
            if identity is None:
                identity = self.adapt(source_image, adaptation)
            batches = generate(self.model, identity, audio.float(), motion=motion, prior=self._prior(prior),
                               seed=seed, batch_frames=self.batch_frames, keep_motion=keep_motion)
        done = 0
        for batch in batches:
            done += batch.shape[0]
            yield batch
            if on_batch is not None:
                on_batch(done, total)

    @torch.no_grad()
    def reconstruct(self, clip: TalkingClip, *, adaptation: Adaptation | None = Adaptation(),
                    identity: SourceIdentity | None = None) -> torch.Tensor:
        """Self-reconstruction: the clip's first frame as the source (adapted to as ``generate`` does, or
        ``identity``, :meth:`adapt` of that frame), its own speech (its mel windows) and its own motion (the
        posterior's mean) -> uint8 [T, R, R, 3]."""
        model, device = self.model, self.device
        reference = clip_faces(clip.faces[:1], self.resolution)
        motion, _ = posterior_motion(model, clip.faces, clip.mels, reference, batch_frames=self.batch_frames)
        if identity is None:
            identity = self.adapt(clip.faces[0], adaptation)
        out = []
        for first in range(0, clip.num_frames, self.batch_frames):
            mels = clip.mels[first:first + self.batch_frames].to(device)
            audio = model.audio_encoder(mels)[None]
            out.append(identity.frames(model, motion[first:first + self.batch_frames][None], audio))
        return torch.cat(out)

    @torch.no_grad()
    def motion_nll(self, clip: TalkingClip, *, prior: str | None = None) -> float:
        """Per-frame negative log-likelihood (nats, summed over the motion dimensions) of the clip's motion
        (posterior mean) under the prior given its speech."""
        model, device = self.model, self.device
        reference = clip_faces(clip.faces[:1], self.resolution)
        motion, _ = posterior_motion(model, clip.faces, clip.mels, reference, batch_frames=self.batch_frames)
        audio = torch.cat([model.audio_encoder(chunk.to(device)) for chunk in clip.mels.split(self.batch_frames)])
        log_prob = model.priors[self._prior(prior)].log_prob(motion[None], audio[None])
        return float(-log_prob.mean())

    @torch.no_grad()
    def sample_motion(self, mels: torch.Tensor, *, seed: int, prior: str | None = None) -> torch.Tensor:
        """Motion latents [T, M] drawn from the prior for mel windows [T, 16, 80] (sampled a batch at a time)."""
        model, device = self.model, self.device
        sampler = model.priors[self._prior(prior)]
        generator, carry, out = torch.Generator().manual_seed(int(seed)), None, []
        for chunk in mels.split(self.batch_frames):
            audio = model.audio_encoder(chunk.to(device))[None]
            motion, carry = sampler.sample(audio, generator=generator, carry=carry)
            out.append(motion[0].cpu())
        return torch.cat(out)

    @torch.no_grad()
    def posterior_motion(self, clip: TalkingClip) -> torch.Tensor:
        """The clip's motion latents (posterior mean) [T, M]: what ``motion_from`` drives with."""
        reference = clip_faces(clip.faces[:1], self.resolution)
        return posterior_motion(self.model, clip.faces, clip.mels, reference, batch_frames=self.batch_frames)[0].cpu()


def load_talker(ref: str, registry: Registry | None = None, *, device: str = "cpu") -> Talker:
    """The talking-head model ``ref`` names (registry reference, exported folder or .safetensors file)."""
    model, source, card = load_model(ref, registry)
    return Talker(model.to(resolve_device(device)), source=source, card=card)


# ---------------------------------------------------------------- files in, files out (mltk talk)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 [H, W, 3]; ArtifactError naming the file when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such image file", hint="pass a PNG or JPEG with one face")
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise ArtifactError(f"{path}: cannot be read as an image ({error})", hint="pass a PNG or JPEG") from None


def align_face(path: str | Path, size: int) -> torch.Tensor:
    """The face of an image file, detected and aligned to the template: uint8 [3, size, size].

    ``faces.NoFaceFound`` (exit 3) names the file when there is no face."""
    image = read_image(path)
    with faces.FaceAnalyzer() as analyzer:
        analyzer.detect(image, source=path)  # the detector's clear "no face" before the mesh
        landmarks = analyzer.landmarks(image, source=path)
    aligned = faces.align(torch.from_numpy(image)[None], landmarks[None], size=size, smooth=False)
    return aligned.crops[0].permute(2, 0, 1).contiguous()


def driving_clip(path: str | Path, size: int) -> TalkingClip:
    """A driving video prepared like training clips (aligned faces and mel windows at ``size``)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such video file", hint="pass an mp4 with one talking face")
    with tempfile.TemporaryDirectory(prefix="mltk-drive-") as folder:
        (Path(folder) / f"{path.stem}.mp4").symlink_to(path.resolve())
        data = load_talking_data(f"video-folder:{folder}", size=size, held_out_speakers=0)
    return data.train[0]


@dataclasses.dataclass
class TalkResult:
    path: Path
    frames: int
    fps: int
    duration: float
    contact_sheet: Path
    model: str
    seconds: float  # adapting to the face, generating, encoding and writing the video
    adaptation: Adaptation | None = None
    adaptation_seconds: float = 0.0  # the fixed cost per face within ``seconds``

    @property
    def frames_per_second(self) -> float:
        return self.frames / max(self.seconds, 1e-9)

    @property
    def rendering_frames_per_second(self) -> float:
        """Frames per second once the face is adapted: the rate long audio approaches."""
        return self.frames / max(self.seconds - self.adaptation_seconds, 1e-9)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "frames": self.frames, "fps": self.fps, "duration": self.duration,
                "contact_sheet": str(self.contact_sheet), "model": self.model,
                "generation_seconds": round(self.seconds, 3), "frames_per_second": round(self.frames_per_second, 2),
                "adaptation_seconds": round(self.adaptation_seconds, 3),
                "rendering_frames_per_second": round(self.rendering_frames_per_second, 2),
                "adaptation": dataclasses.asdict(self.adaptation) if self.adaptation else None}


def check_output(path: str | Path) -> Path:
    """The output path, refused before any work when it cannot be written (UsageError naming it)."""
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise UsageError(f"{path}: the output must be an .mp4 file", hint="name it OUT.mp4")
    if not path.parent.is_dir():
        raise UsageError(f"{path}: folder {path.parent} does not exist", hint="create it or pick another path")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder", hint="name a file, e.g. out.mp4")
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}-", suffix=".probe"):
            pass
    except OSError as error:
        raise UsageError(f"{path}: cannot be written ({error.strerror})", hint="pick a writable folder") from None
    return path


def contact_sheet_path(video: Path) -> Path:
    return video.with_name(f"{video.stem}.contact.png")


def talk(image: str | Path, audio_path: str | Path, out: str | Path, *, model: str | None = None,
         motion_from: str | Path | None = None, seed: int = 0, prior: str | None = None, device: str = "cpu",
         adaptation: Adaptation | None = Adaptation(), on_batch: Callable[[int, int], None] | None = None,
         registry: Registry | None = None) -> TalkResult:
    """``mltk talk``: align the face of ``image``, make it speak ``audio_path``, write ``out`` (mp4, H.264 + AAC,
    25 fps, as long as the audio) and a contact sheet PNG beside it. The seconds reported include adapting the
    generator to the face (``adaptation``; None skips it), also reported on their own."""
    out = check_output(out)
    ref = model or latest_talker(registry)
    talker = load_talker(ref, registry, device=device)
    waveform = media.read_audio(audio_path)
    source = align_face(image, talker.resolution)
    driving = driving_clip(motion_from, talker.resolution) if motion_from else None
    total = speech.frame_count(waveform.shape[0])
    picks = sorted({round(i * (total - 1) / max(CONTACT_SHEET_FRAMES - 1, 1)) for i in range(CONTACT_SHEET_FRAMES)})
    kept: dict[int, np.ndarray] = {}
    started = time.perf_counter()
    identity = talker.adapt(source, adaptation)
    adaptation_seconds = time.perf_counter() - started

    def frames() -> Iterator[np.ndarray]:
        index = 0
        for batch in talker.generate(source, waveform, motion_from=driving, seed=seed, prior=prior,
                                     identity=identity, on_batch=on_batch):
            for frame in batch.numpy():
                if index in picks:
                    kept[index] = frame
                index += 1
                yield frame

    media.write_video(out, frames(), waveform)
    seconds = time.perf_counter() - started
    sheet = write_contact_sheet(contact_sheet_path(out), [kept[i] for i in picks])
    return TalkResult(out, total, media.VIDEO_FPS, total / media.VIDEO_FPS, sheet, talker.source, seconds,
                      adaptation if adaptation is not None and adaptation.enabled else None, adaptation_seconds)


def write_contact_sheet(path: Path, frames: list[np.ndarray], columns: int = 4) -> Path:
    """Frames side by side in rows of ``columns``, as a PNG."""
    height, width = frames[0].shape[:2]
    rows = math.ceil(len(frames) / columns)
    sheet = np.zeros((rows * height, min(columns, len(frames)) * width, 3), np.uint8)
    for index, frame in enumerate(frames):
        row, column = divmod(index, columns)
        sheet[row * height:(row + 1) * height, column * width:(column + 1) * width] = frame
    Image.fromarray(sheet).save(path)
    return path
