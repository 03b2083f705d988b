"""The contrastive lip-sync discriminator: is this mouth saying this sound?

Two encoders map a mouth crop ``v_t`` [B, 3, M, M] and a mel window ``a_t``
[B, 16, 80] to unit vectors; their cosine is the sync score. It is trained
with InfoNCE over one positive and K time-shifted negatives of the same clip:

    L_sync = -log exp(s(v_t, a_t) / tau) / sum_{k in {t} + shifts} exp(s(v_t, a_k) / tau)

Negatives come only from the same clip (the hard case: same voice, same
face, wrong time), at least ``min_shift`` frames away, so each sample's loss
depends on its own clip only and N ranks see the same loss as one process.
Once trained it is frozen and the same loss on *generated* mouths is the
generator's lip loss (``lip_loss``). The independent evaluation expert is a
different model (``sync_expert.py``), never this one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mltk.engines.talk.encoders import AudioEncoder


class MouthEncoder(nn.Module):
    """mouth crops [B, 3, M, M] in [-1, 1] -> [B, dim]."""

    def __init__(self, dim: int, *, channels: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * channels, 4 * channels, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(2),
        )
        self.out = nn.Linear(4 * channels * 4, dim)

    def forward(self, mouths: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(mouths).flatten(1))


class SyncDiscriminator(nn.Module):
    def __init__(self, *, dim: int = 64, channels: int = 32, temperature: float = 0.1):
        super().__init__()
        self.mouth = MouthEncoder(dim, channels=channels)
        self.audio = AudioEncoder(dim, channels=channels)
        self.temperature = temperature

    def embed_mouths(self, mouths: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mouth(mouths), dim=-1)

    def embed_audio(self, mels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.audio(mels), dim=-1)

    def scores(self, mouths: torch.Tensor, mels: torch.Tensor) -> torch.Tensor:
        """Cosine sync scores: mouths [B, 3, M, M] against mels [B, 16, 80] -> [B]; or mels [B, K, 16, 80] -> [B, K]."""
        video = self.embed_mouths(mouths)
        audio = self.embed_audio(mels)
        return (audio * (video[:, None] if audio.dim() == 3 else video)).sum(-1)

    def info_nce(self, mouths: torch.Tensor, mels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mouths [B, 3, M, M]; mels [B, 1 + K, 16, 80] with the aligned window first ->
        (mean InfoNCE loss, fraction of samples whose aligned window scores highest)."""
        logits = self.scores(mouths, mels) / self.temperature
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target), (logits.argmax(1) == 0).float().mean()

    def forward(self, mouths: torch.Tensor, mels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.info_nce(mouths, mels)


def lip_loss(discriminator: SyncDiscriminator, mouths: torch.Tensor, mels: torch.Tensor) -> torch.Tensor:
    """The frozen discriminator's InfoNCE on generated mouths (its weights take no gradient, the mouths do)."""
    return discriminator.info_nce(mouths, mels)[0]


def shifted_frames(frames: torch.Tensor, lengths: torch.Tensor, *, negatives: int, min_shift: int,
                   generator: torch.Generator) -> torch.Tensor:
    """For anchor frames [B] of clips of ``lengths`` [B]: [B, 1 + negatives] frame indices, the anchor first,
    then frames at least ``min_shift`` away in the same clip (drawn uniformly among those)."""
    draws = torch.rand(frames.shape[0], negatives, generator=generator)
    # The frames at distance >= min_shift: [0, t - min_shift] and [t + min_shift, L - 1]; count them and index.
    below = (frames - min_shift + 1).clamp(min=0)
    above = (lengths - frames - min_shift).clamp(min=0)
    total = below + above
    if bool((total == 0).any()):
        raise ValueError(f"a clip is too short for negatives {min_shift} frames away (lengths {lengths.tolist()})")
    pick = (draws * total[:, None]).long().clamp(max=(total - 1)[:, None])
    chosen = torch.where(pick < below[:, None], pick, frames[:, None] + min_shift + (pick - below[:, None]))
    return torch.cat([frames[:, None], chosen], dim=1)
