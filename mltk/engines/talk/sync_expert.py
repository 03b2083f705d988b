"""The independent lip-sync expert that scores generated video (LSE-C and LSE-D analogues), SyncNet-style.

Evaluation must not use the discriminator a model was trained against: a
generator can learn to please its own critic without being in sync (Wav2Lip's
authors score with a separately trained SyncNet for this reason). This expert
shares nothing with ``sync_discriminator.py``. It has its own architecture, loss
and seed, and it never sees generated frames:

* **Video tower.** Five consecutive mouth crops (``data.mouth_crops``: frames
  t-2 to t+2, 0.2 s, SyncNet's context). A small 2-D ConvNet runs on each
  frame, then 1-D convolutions run across the five, giving an embedding
  [dim, 5], one column per frame. The training discriminator sees a single
  frame.
* **Audio tower.** 1-D convolutions along time, with the 80 mel bands as
  channels (a time-delay network), on the window of frame t (16 mel frames,
  the same 0.2 s). It is pooled to the five frames the window spans, then
  passes through the same kind of temporal head. The training discriminator
  runs a 2-D ConvNet over (time, band).
* **Loss.** Each embedding is flattened, standardised over the batch
  (BatchNorm without affine parameters) and normalised to unit length. Their
  cosine c gives P(in sync) = sigmoid(scale * c + bias), trained with binary
  cross-entropy on pairs (SigLIP's pairwise sigmoid; Wav2Lip's SyncNet uses
  BCE on a ReLU'd cosine). Half of each batch are aligned pairs. The other
  half are the same clip's window shifted by ``min_shift`` to ``max_shift``
  frames either way. The training discriminator uses InfoNCE instead.
  Without the batch standardisation, BCE training collapsed on our data: every
  pair went orthogonal and the loss stuck at ln 2, because the constant part
  all embeddings share hides the part that varies with the mouth.

**LSE-D and LSE-C** follow ``syncnet_python`` (``SyncNetInstance.evaluate``),
which Wav2Lip's ``evaluation/scores_LSE`` runs. For every offset o in -15..15
frames, take the mean over frames t of the distance between the video
embedding at t and the audio embedding at t + o. The frames t are the same
for every offset: those 15 or more frames from either end, so that every
shifted window exists (syncnet_python zero-pads the features instead, which
makes a still face's curve dip at the ends). A clip shorter than 31 frames
gets a shorter reach. This gives a curve of 31 mean distances:

    LSE-D = min_o  mean_t d(v_t, a_{t+o})        (lower: closer to in sync)
    LSE-C = median_o(curve) - min_o(curve)      (higher: a clear, confident minimum)

The curve's minimising offset is the estimated audio-video offset (0 for
synced video). **These are analogues, not the published numbers.** The
embeddings are unit vectors, so d lies in [0, 2] (1.41 for unrelated ones). SyncNet's are
unnormalised, with LSE-D around 6 to 8 and LSE-C around 7 on real video. The
expert is trained on mltk's crops and mel features (centred windows,
``audio.py``), not on LRS2. So compare figures from one expert only: ground
truth, models and baselines, on the same clips.

The expert is stored as its own artifact, of kind ``sync-expert``. It is a
weights file whose safetensors metadata is its card (``provenance``), so the
same file can live in the registry (``expert_artifact``), in an exported
folder or alone. ``expert_for_clips`` trains one on demand and caches it under
``$MLTK_HOME/cache/talk``, keyed by the training clips and the settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mltk.core.artifact import WEIGHTS_FILE, build_card, open_artifact, provenance
from mltk.core.errors import ArtifactError, UsageError
from mltk.core.registry import Registry
from mltk.core.tensor_files import load_safetensors, safetensors_bytes, write_file
from mltk.engines.talk.audio import N_MELS, WINDOW_MEL_FRAMES
from mltk.engines.talk.data import TalkingClip, default_cache_dir, mouth_crops

KIND = "sync-expert"
ENGINE = "talk"
KIND_HINT = "train one with mltk.engines.talk.sync_expert.train_sync_expert, or let --protocol talk train it"
CONTEXT_FRAMES = 5  # t-2 .. t+2: the 0.2 s the mel window covers
MAX_OFFSET = 15  # frames either way, syncnet_python's vshift
EXPERT_VERSION = 1
# The expert's own seed, unlike any seed a talking-head model trains with (those default to 0).
EXPERT_SEED = 7_919


@dataclasses.dataclass(frozen=True)
class ExpertSpec:
    mouth_size: int = 32  # mouth crops are resized to this (pixels)
    dim: int = 32  # embedding size (per frame; the embedding is dim x 5)
    channels: int = 16  # width of the first layer of each tower


@dataclasses.dataclass(frozen=True)
class ExpertTraining:
    steps: int = 800
    batch_size: int = 64  # pairs per step, half in sync and half shifted
    lr: float = 1e-3
    min_shift: int = 3  # frames: a negative's window is at least this far off
    max_shift: int = 15
    seed: int = EXPERT_SEED


class _VideoTower(nn.Module):
    """[B, 5, 3, M, M] in [0, 1] -> [B, dim, 5]: a 2-D ConvNet per frame, then 1-D convolutions across the frames."""

    def __init__(self, spec: ExpertSpec):
        super().__init__()
        width = spec.channels
        self.frame = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1))
        self.time = nn.Sequential(nn.Conv1d(4 * width, spec.dim, 3, padding=1), nn.ReLU(),
                                  nn.Conv1d(spec.dim, spec.dim, 1))

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        batch, frames = sequences.shape[:2]
        per_frame = self.frame((sequences.flatten(0, 1) - 0.5) * 2).view(batch, frames, -1)
        return self.time(per_frame.transpose(1, 2))


class _AudioTower(nn.Module):
    """[B, 16, 80] mel windows -> [B, dim, 5]: 1-D convolutions along time (mel bands as channels), pooled to
    the five video frames the window spans."""

    def __init__(self, spec: ExpertSpec):
        super().__init__()
        width = 4 * spec.channels
        self.net = nn.Sequential(nn.Conv1d(N_MELS, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv1d(width, width, 3, padding=1), nn.ReLU())
        self.time = nn.Sequential(nn.Conv1d(width, spec.dim, 3, padding=1), nn.ReLU(),
                                  nn.Conv1d(spec.dim, spec.dim, 1))

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        steps = F.adaptive_avg_pool1d(self.net(mels.transpose(1, 2)), CONTEXT_FRAMES)
        return self.time(steps)


class SyncExpert(nn.Module):
    """P(in sync) of five mouth frames and a mel window, from the cosine of their normalised embeddings."""

    def __init__(self, spec: ExpertSpec = ExpertSpec()):
        super().__init__()
        self.spec = spec
        self.video = _VideoTower(spec)
        self.audio = _AudioTower(spec)
        # Centred and scaled over the batch before the cosine, so the cosine measures how the two vary
        # together, not the large constant part every embedding shares (which collapses BCE training).
        self.video_norm = nn.BatchNorm1d(spec.dim * CONTEXT_FRAMES, affine=False)
        self.audio_norm = nn.BatchNorm1d(spec.dim * CONTEXT_FRAMES, affine=False)

        # P(in sync) = sigmoid(scale * cosine + bias), both learnt (SigLIP's pairwise sigmoid).
        self.scale = nn.Parameter(torch.tensor(5.0))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def embed_video(self, sequences: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.video_norm(self.video(sequences).flatten(1)), dim=-1)

    def embed_audio(self, mels: torch.Tensor) -> torch.Tensor:
        if mels.shape[-2:] != (WINDOW_MEL_FRAMES, N_MELS):
            raise ValueError(f"expected mel windows [B, {WINDOW_MEL_FRAMES}, {N_MELS}], got {tuple(mels.shape)}")
        return F.normalize(self.audio_norm(self.audio(mels).flatten(1)), dim=-1)

    def cosine(self, sequences: torch.Tensor, mels: torch.Tensor) -> torch.Tensor:
        """[B] cosine of the embeddings, in [-1, 1]."""
        return (self.embed_video(sequences) * self.embed_audio(mels)).sum(-1)

    def forward(self, sequences: torch.Tensor, mels: torch.Tensor) -> torch.Tensor:
        """[B] logit of P(in sync)."""
        return self.scale * self.cosine(sequences, mels) + self.bias


def context_windows(mouths: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """mouths [T, 3, M, M], frame indices [B] -> [B, 5, 3, M, M], frames t-2..t+2 (the clip's ends repeated)."""
    offsets = torch.arange(CONTEXT_FRAMES) - CONTEXT_FRAMES // 2
    return mouths[(frames[:, None] + offsets).clamp(0, mouths.shape[0] - 1)]


def expert_mouths(expert: SyncExpert, faces: torch.Tensor) -> torch.Tensor:
    """Aligned faces, uint8 [T, 3, S, S] (or generated frames [T, S, S, 3]) -> the expert's mouth crops."""
    if faces.dim() == 4 and faces.shape[-1] == 3 and faces.shape[1] != 3:
        faces = faces.permute(0, 3, 1, 2)
    return mouth_crops(faces, expert.spec.mouth_size)


# --- training ----------------------------------------------------------------------------------------

def train_sync_expert(clips: Sequence[TalkingClip], *, spec: ExpertSpec = ExpertSpec(),
                      training: ExpertTraining = ExpertTraining(),
                      on_step: Callable[[int, float, float], None] | None = None) -> tuple[SyncExpert, dict]:
    """An expert trained on ``clips`` (their ground-truth faces and audio); (expert in eval mode, stats).

    ``on_step(step, loss, accuracy)`` after each step; accuracy thresholds the cosine at 0.5.
    """
    usable = [clip for clip in clips if clip.num_frames > training.min_shift + 1]
    if not usable:
        raise UsageError(f"no clip is longer than {training.min_shift + 1} frames to train the sync expert on")
    mouths = [mouth_crops(clip.faces, spec.mouth_size) for clip in usable]
    mels = [clip.mels.to(torch.float32) for clip in usable]
    lengths = torch.tensor([clip.num_frames for clip in usable])
    generator = torch.Generator().manual_seed(training.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(training.seed)
        expert = SyncExpert(spec)
    optimizer = torch.optim.Adam(expert.parameters(), lr=training.lr)
    started, recent = time.perf_counter(), []
    expert.train()
    for step in range(training.steps):
        sequences, windows, labels = _batch(mouths, mels, lengths, training, generator)
        logits = expert(sequences, windows)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value, accuracy = loss.item(), float(((logits.detach() > 0).float() == labels).float().mean())
        recent = (recent + [(value, accuracy)])[-20:]
        if on_step is not None:
            on_step(step, value, accuracy)
    expert.eval()
    stats = {"steps": training.steps, "seconds": round(time.perf_counter() - started, 2),
             "clips": len(usable), "frames": int(lengths.sum()),
             "final_loss": sum(item[0] for item in recent) / max(len(recent), 1),
             "final_accuracy": sum(item[1] for item in recent) / max(len(recent), 1)}
    return expert, stats


def _batch(mouths: list[torch.Tensor], mels: list[torch.Tensor], lengths: torch.Tensor,
           training: ExpertTraining, generator: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Half aligned pairs, half pairs whose window is ``min_shift``..``max_shift`` frames off (same clip)."""
    size = training.batch_size
    clip_index = torch.multinomial(lengths.float(), size, replacement=True, generator=generator)
    length = lengths[clip_index]
    frames = (torch.rand(size, generator=generator) * length).long()
    labels = (torch.arange(size) % 2 == 0).float()
    distance = torch.randint(training.min_shift, training.max_shift + 1, (size,), generator=generator)
    sign = torch.randint(0, 2, (size,), generator=generator) * 2 - 1
    shifted = frames + sign * distance
    shifted = torch.where((shifted < 0) | (shifted >= length), frames - sign * distance, shifted)  # the other way
    shifted = shifted.clamp(torch.zeros_like(length), length - 1)  # a clip shorter than the shift: its end
    audio_frames = torch.where(labels.bool(), frames, shifted)
    sequences = torch.stack([context_windows(mouths[c], frames[i:i + 1])[0] for i, c in enumerate(clip_index.tolist())])
    windows = torch.stack([mels[c][audio_frames[i]] for i, c in enumerate(clip_index.tolist())])
    return sequences, windows, labels


# --- scoring -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SyncCurve:
    """Mean distance per audio offset (frames, -max_offset..max_offset) and the LSE analogues read from it."""

    offsets: list[int]
    distances: list[float]

    @property
    def lse_d(self) -> float:
        return min(self.distances)

    @property
    def lse_c(self) -> float:
        return float(torch.tensor(self.distances).median()) - self.lse_d

    @property
    def best_offset(self) -> int:
        return self.offsets[min(range(len(self.distances)), key=self.distances.__getitem__)]


@torch.no_grad()
def sync_curve(expert: SyncExpert, mouths: torch.Tensor, mels: torch.Tensor, *, max_offset: int = MAX_OFFSET,
               batch: int = 256) -> SyncCurve:
    """mouths [T, 3, M, M] in [0, 1] (``mouth_crops``), mels [T, 16, 80] -> the distance curve over offsets."""
    if mouths.shape[0] != mels.shape[0]:
        raise ValueError(f"{mouths.shape[0]} mouth frames but {mels.shape[0]} mel windows")
    if mouths.shape[-1] != expert.spec.mouth_size:
        mouths = F.interpolate(mouths.float(), size=(expert.spec.mouth_size,) * 2, mode="bilinear",
                               align_corners=False, antialias=mouths.shape[-1] > expert.spec.mouth_size)
    count = mouths.shape[0]
    if count < 3:
        raise ValueError(f"sync needs at least 3 frames, got {count}")
    video = torch.cat([expert.embed_video(context_windows(mouths, torch.arange(first, min(first + batch, count))))
                       for first in range(0, count, batch)])
    sound = torch.cat([expert.embed_audio(chunk.float()) for chunk in mels.split(batch)])
    # Every offset scores the same frames, those whose shifted windows all exist, so the curve moves only
    # with the offset (a still face gets a flat curve); short clips get a shorter reach.
    reach = min(max_offset, (count - 1) // 2)
    scored = video[reach:count - reach]
    offsets = list(range(-reach, reach + 1))
    distances = [float((scored - sound[reach + o:count - reach + o]).norm(dim=-1).mean()) for o in offsets]
    return SyncCurve(offsets, distances)


def lse(expert: SyncExpert, mouths: torch.Tensor, mels: torch.Tensor, *, max_offset: int = MAX_OFFSET
        ) -> tuple[float, float]:
    """(LSE-C, LSE-D) analogues of mouth crops [T, 3, M, M] against mel windows [T, 16, 80] (module docstring)."""
    curve = sync_curve(expert, mouths, mels, max_offset=max_offset)
    return curve.lse_c, curve.lse_d


@torch.no_grad()
def pair_scores(expert: SyncExpert, mouths: torch.Tensor, mels: torch.Tensor, shift: int) -> tuple[torch.Tensor,
                                                                                                   torch.Tensor]:
    """(aligned, shifted) cosines per frame: frame t's mouths with window t, and with window t + ``shift``."""
    count = mouths.shape[0] - abs(shift)
    frames = torch.arange(max(0, -shift), max(0, -shift) + count)
    sequences = context_windows(mouths, frames)
    return expert.cosine(sequences, mels[frames]), expert.cosine(sequences, mels[frames + shift])


# --- storing -----------------------------------------------------------------------------------------

def expert_artifact(expert: SyncExpert, *, training: ExpertTraining, stats: dict, data: str,
                    parent: str = "") -> tuple[dict[str, bytes], dict]:
    """(files, card) for ``Registry.save``: kind ``sync-expert``, its spec and training in the card."""
    sections = {"expert": dataclasses.asdict(expert.spec), "training": dataclasses.asdict(training),
                "data": data, "expert_version": EXPERT_VERSION}
    card = build_card(kind=KIND, engine=ENGINE, config={**sections}, metrics={
        "final_accuracy": stats["final_accuracy"], "final_loss": stats["final_loss"]},
        parent=parent, relation="trained", primary_metric="final_accuracy",
        parameters=sum(p.numel() for p in expert.parameters()), config_sha256=_config_sha(sections), **sections)
    metadata = provenance(engine=ENGINE, parent=parent, relation="trained", kind=KIND, **sections, stats=stats)
    return {WEIGHTS_FILE: safetensors_bytes(expert.state_dict(), metadata)}, card


def _config_sha(sections: dict) -> str:
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()


def load_sync_expert(ref: str, registry: Registry | None = None) -> tuple[SyncExpert, dict]:
    """The expert ``ref`` names (registry reference, exported folder or its .safetensors file) and its card."""
    opened = open_artifact(ref, registry=registry, kinds=(KIND,), kind_hint=KIND_HINT, lone_files=True)
    try:
        spec = ExpertSpec(**opened.card["expert"])
    except (KeyError, TypeError) as error:
        raise ArtifactError(f"{opened.source}: its card does not describe a sync expert ({error})",
                            hint="train it again with this version of mltk") from None
    expert = SyncExpert(spec)
    tensors, _ = load_safetensors(opened.file(WEIGHTS_FILE))
    try:
        expert.load_state_dict(tensors)
    except RuntimeError as error:
        raise ArtifactError(f"{opened.source}: the weights do not fit the expert its card describes "
                            f"({str(error).splitlines()[0]})", hint="train it again") from None
    return expert.eval(), opened.card


def clips_digest(clips: Sequence[TalkingClip]) -> str:
    """A key of the clips' content (names, faces, mel windows)."""
    digest = hashlib.sha256()
    for clip in clips:
        digest.update(clip.name.encode())
        digest.update(clip.faces.contiguous().numpy().tobytes())
        digest.update(clip.mels.contiguous().numpy().tobytes())
    return digest.hexdigest()


def expert_for_clips(clips: Sequence[TalkingClip], *, data: str, spec: ExpertSpec = ExpertSpec(),
                     training: ExpertTraining = ExpertTraining(), cache_dir: str | Path | None = None,
                     on_step: Callable[[int, float, float], None] | None = None) -> tuple[SyncExpert, dict, Path]:
    """(expert, its card, its file): read from the cache when these clips and settings trained one before."""
    key = hashlib.sha256(json.dumps([clips_digest(clips), dataclasses.asdict(spec), dataclasses.asdict(training),
                                     EXPERT_VERSION]).encode()).hexdigest()[:24]
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = path / f"sync-expert-{key}.safetensors"
    if path.is_file():
        try:
            expert, card = load_sync_expert(str(path))
            return expert, card, path
        except ArtifactError:
            pass  # a damaged cache entry is trained again and overwritten
    expert, stats = train_sync_expert(clips, spec=spec, training=training, on_step=on_step)
    files, _ = expert_artifact(expert, training=training, stats=stats, data=data)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    write_file(partial, files[WEIGHTS_FILE])
    partial.replace(path)
    expert, card = load_sync_expert(str(path))
    return expert, card, path
