"""StyleTalker's parts in one module, and how they compose into frames.

::

    w_id  = E(x_ref)                                         identity: the source frame's W+ latent
    a_t   = A(mel window t)                                  speech feature of frame t
    m_t   ~ q(m | E(mask_mouth(x_1:T)) - w_id, a_1:T)        motion from a driving video (posterior), or
    m_t   ~ p(m_t | m_<t, a_<=t)                             motion sampled from speech (the prior)
    w_t   = w_id + Δ_mot(m_t, w_id) + Δ_lip(a_t, w_id)
    x_t   = G(w_t)

``TalkerSpec`` is everything needed to rebuild the modules (it is stored on
the artifact's card); ``StyleTalkerModel.forward(stage, batch)`` computes one
training stage's loss, so that the shared loop can wrap the model in DDP.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mltk.engines.talk.data import MOUTH_REGION
from mltk.engines.talk.encoders import AudioEncoder, ImageEncoder, LipEdit, mask_mouth, resize_faces
from mltk.engines.talk.generator import StyleGenerator, num_latents
from mltk.engines.talk.motion import MotionEdit, MotionPosterior, monte_carlo_kl, sample_posterior
from mltk.engines.talk.priors import PRIORS, build_prior
from mltk.engines.talk.sync_discriminator import SyncDiscriminator, lip_loss

STAGES = ("sync", "generator", "motion")


@dataclasses.dataclass(frozen=True)
class TalkerSpec:
    resolution: int = 64
    w_dim: int = 64
    base_channels: int = 16  # generator/encoder channels at the top level (doubling towards 4x4, capped)
    max_channels: int = 128
    audio_dim: int = 64
    motion_dim: int = 16
    hidden: int = 128  # GRUs of the posterior and the priors
    prior: Literal["flow", "gaussian"] = "flow"  # the prior the VAE's KL is taken against
    flow_layers: int = 4
    mouth_size: int = 32  # side of the mouth crops the sync discriminator reads
    sync_dim: int = 64
    sync_channels: int = 32
    sync_temperature: float = 0.1

    @property
    def num_ws(self) -> int:
        return num_latents(self.resolution)

    @classmethod
    def from_dict(cls, values: dict) -> TalkerSpec:
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


def mouth_region(images: torch.Tensor, size: int) -> torch.Tensor:
    """float [B, 3, R, R] aligned faces in [-1, 1] -> [B, 3, size, size]: the lower face, ``data.MOUTH_REGION``.

    The region ``data.mouth_crops`` cuts from uint8 faces, cut here from float ones and differentiable, so
    the same crop serves real frames and generated ones and the frozen discriminator's loss reaches the
    generator."""
    side = images.shape[-1]
    left, top, right, bottom = (round(fraction * side) for fraction in MOUTH_REGION)
    return resize_faces(images[..., top:bottom, left:right], size)


def render_with(generator: nn.Module, ws: torch.Tensor) -> torch.Tensor:
    """Latents [..., N, W] -> frames [..., 3, R, R] through ``generator`` (the model's, or one fitted to a face)."""
    images = generator(ws.reshape(-1, *ws.shape[-2:]))
    return images.view(*ws.shape[:-2], *images.shape[1:])


class StyleTalkerModel(nn.Module):
    def __init__(self, spec: TalkerSpec):
        super().__init__()
        self.spec = spec
        num_ws = spec.num_ws
        self.sync = SyncDiscriminator(dim=spec.sync_dim, channels=spec.sync_channels,
                                      temperature=spec.sync_temperature)
        self.generator = StyleGenerator(spec.resolution, w_dim=spec.w_dim, base_channels=spec.base_channels,
                                        max_channels=spec.max_channels)
        self.image_encoder = ImageEncoder(spec.resolution, num_ws, w_dim=spec.w_dim,
                                          base_channels=spec.base_channels, max_channels=spec.max_channels)
        self.audio_encoder = AudioEncoder(spec.audio_dim)
        self.lip_edit = LipEdit(spec.audio_dim, num_ws, spec.w_dim)
        self.posterior = MotionPosterior(num_ws, spec.w_dim, spec.audio_dim, spec.motion_dim, hidden=spec.hidden)
        self.motion_edit = MotionEdit(spec.motion_dim, num_ws, spec.w_dim)
        # Both priors, fitted to the same motion latents: the KL uses spec.prior, the other is the ablation's.
        self.priors = nn.ModuleDict({kind: build_prior(kind, spec.motion_dim, spec.audio_dim, hidden=spec.hidden,
                                                       flow_layers=spec.flow_layers) for kind in PRIORS})

    # ------------------------------------------------------------ which parameters each stage trains

    def stage_modules(self, stage: str) -> list[nn.Module]:
        if stage == "sync":
            return [self.sync]
        if stage == "generator":
            return [self.generator, self.image_encoder, self.audio_encoder, self.lip_edit]
        return [self.posterior, self.motion_edit, self.priors]

    def train_only(self, stage: str) -> None:
        """requires_grad on ``stage``'s parameters alone (the others are frozen, their gradients not even kept)."""
        trained = {id(p) for module in self.stage_modules(stage) for p in module.parameters()}
        for parameter in self.parameters():
            parameter.requires_grad_(id(parameter) in trained)

    # ------------------------------------------------------------ composing frames

    def identity(self, reference: torch.Tensor) -> torch.Tensor:
        """reference frames [B, 3, R, R] in [-1, 1] -> w_id [B, num_ws, w_dim]."""
        return self.image_encoder(reference)

    def pose_latents(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [..., 3, R, R] -> E(mask_mouth(frames)) [..., num_ws, w_dim]: the pose without the lips."""
        lead = frames.shape[:-3]
        return self.image_encoder(mask_mouth(frames).reshape(-1, *frames.shape[-3:])).view(
            *lead, self.spec.num_ws, self.spec.w_dim)

    def posterior_motion(self, frames: torch.Tensor, w_id: torch.Tensor, audio: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """A driving clip's frames [B, T, 3, R, R] -> the posterior's (mean, log sigma) [B, T, M]."""
        return self.posterior(self.pose_latents(frames) - w_id[:, None], audio)

    def edits(self, w_id: torch.Tensor, motion: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Δ_mot(m_t, w_id) + Δ_lip(a_t, w_id) [B, T, N, W] for w_id [B, N, W], motion [B, T, M], audio [B, T, A]:
        w_t is w_id (or the pivot ``adaptation.py`` fits to the source) plus these."""
        identity = w_id[:, None].expand(-1, motion.shape[1], -1, -1)
        return self.motion_edit(motion, identity) + self.lip_edit(audio, identity)

    def render(self, ws: torch.Tensor) -> torch.Tensor:
        """[..., N, W] -> frames [..., 3, R, R]."""
        return render_with(self.generator, ws)

    # ------------------------------------------------------------ the training stages' losses

    def forward(self, stage: str, batch: dict, weights: dict) -> tuple[torch.Tensor, dict]:
        if stage == "sync":
            return self._sync_loss(batch)
        if stage == "generator":
            return self._generator_loss(batch, weights)
        return self._motion_loss(batch, weights)

    def _sync_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        loss, accuracy = self.sync(mouth_region(batch["frames"], self.spec.mouth_size), batch["mels"])
        return loss, {"sync_accuracy": accuracy.detach()}

    def _generator_loss(self, batch: dict, weights: dict) -> tuple[torch.Tensor, dict]:
        """Auto-encoding G(E(x_t)) ~ x_t, and the speech path G(E(mask(x_t)) + Δ_lip(a_t, w_id)) ~ x_t with the
        frozen discriminator's InfoNCE on its mouth."""
        frames, mels = batch["frames"], batch["mels"]  # [B, 3, R, R], [B, 1 + K, 16, 80] (aligned first)
        w_id = self.identity(batch["reference"])
        autoencoded = self.generator(self.image_encoder(frames))
        lip = self.lip_edit(self.audio_encoder(mels[:, 0]), w_id)
        spoken = self.generator(self.pose_latents(frames) + lip)
        reconstruction = F.l1_loss(autoencoded, frames)
        spoken_reconstruction = F.l1_loss(spoken, frames)
        loss = reconstruction + spoken_reconstruction
        stats = {"autoencoder_l1": reconstruction.detach(), "speech_l1": spoken_reconstruction.detach()}
        if weights["lip"] > 0:
            lips = lip_loss(self.sync, mouth_region(spoken, self.spec.mouth_size), mels)
            loss = loss + weights["lip"] * lips
            stats["lip_sync_loss"] = lips.detach()
        return loss, stats

    def _motion_loss(self, batch: dict, weights: dict) -> tuple[torch.Tensor, dict]:
        """The CVAE: posterior draw -> latents and frames through the frozen G; MC KL against the chosen prior;
        the other prior fitted by maximum likelihood to the same (detached) draws."""
        frames, mels = batch["frames"], batch["mels"]  # [B, T, 3, R, R], [B, T, 16, 80]
        with torch.no_grad():
            w_id = self.identity(batch["reference"])
            pose = self.pose_latents(frames)
            audio = self.audio_encoder(mels)
        mean, log_sigma = self.posterior(pose - w_id[:, None], audio)
        motion = sample_posterior(mean, log_sigma, batch.get("posterior_noise"))
        identity = w_id[:, None].expand(-1, motion.shape[1], -1, -1)
        posed = identity + self.motion_edit(motion, identity)
        latent_loss = F.mse_loss(posed, pose)
        chosen = self.spec.prior
        kl = monte_carlo_kl(motion, mean, log_sigma, self.priors[chosen].log_prob(motion, audio)).mean()
        loss = weights["latent"] * latent_loss + weights["kl"] * kl
        stats = {"latent_mse": latent_loss.detach(), "kl": kl.detach()}
        for kind, prior in self.priors.items():
            if kind != chosen:
                other_nll = -prior.log_prob(motion.detach(), audio).mean()
                loss = loss + other_nll * weights["kl"]
                stats[f"{kind}_prior_nll"] = other_nll.detach()
        if weights["reconstruction"] > 0:
            with torch.no_grad():
                lip = self.lip_edit(audio, identity)
            rendered = self.render(posed + lip)
            reconstruction = F.l1_loss(rendered, frames)
            loss = loss + weights["reconstruction"] * reconstruction
            stats["motion_l1"] = reconstruction.detach()
        return loss, stats
