"""One-shot identity adaptation: fit the generator to the source face before it speaks (pivotal tuning).

StyleTalker puts the source face into a pretrained StyleGAN's latent space
with an encoder. mltk's generator is trained on the user's clips, which at
small scale means a handful of people (the CPU preset: four). The encoder's
latent of a face none of them is renders someone in between: on the shared
held-out speaker the source face comes back at 11.5 dB PSNR, and a plain
conv autoencoder at the same budget does no better (benchmarks/results/talk.md),
so it is the number of identities seen, not the generator, that limits it.

Pivotal tuning (Roich et al., "Pivotal Tuning for Latent-based Editing of
Real Images", 2022) is the standard remedy for faces a generator cannot
reach: a latent for the source (the *pivot*) is found first, then a copy of
the generator is tuned on that one image with the pivot fixed. Frames are
``G'(pivot + Δ_mot + Δ_lip)``: the edits are computed exactly as without
adaptation (conditioned on the encoder's ``w_id``) and added to the pivot.
The model's own weights are left as they are. PTI's LPIPS term needs
pretrained perceptual weights, so the loss here is L1 alone (our
simplification). Deterministic: no random draws.

The pivot is the encoder's own latent ``w_id`` by default
(``latent_steps=0``): the latent the edits were trained on. PTI inverts into
W rather than W+ for the same reason, that edits stay meaningful on the
pivot. Optimising the W+ latent first (``latent_steps > 0``) reproduces the
source as well but moves the pivot where the edits were never trained. On
the held-out speaker, with six models trained at 5x the CPU preset's budget,
MediaPipe found a face in 4% of the self-reconstructed frames on average
with a W+ pivot (100 + 100 steps) against 47% with the encoder's latent (100
generator steps), and the PSNR was higher with the encoder's latent in all
eight models scored (benchmarks/results/talk.md).
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from mltk.engines.talk.encoders import to_uint8
from mltk.engines.talk.model import StyleTalkerModel, render_with


@dataclasses.dataclass(frozen=True)
class Adaptation:
    latent_steps: int = 0  # Adam steps on the W+ latent (the pivot), generator frozen; 0: the encoder's w_id
    generator_steps: int = 100  # Adam steps on a copy of the generator, pivot fixed
    latent_lr: float = 0.01
    generator_lr: float = 3e-4  # PTI's

    def __post_init__(self):
        if self.latent_steps < 0 or self.generator_steps < 0:
            raise ValueError("adaptation steps must be >= 0")

    @classmethod
    def steps(cls, generator_steps: int) -> Adaptation:
        """``generator_steps`` steps of tuning on the encoder's latent (``mltk talk --adapt-steps``); 0 turns
        adaptation off."""
        return cls(latent_steps=0, generator_steps=generator_steps)

    @property
    def enabled(self) -> bool:
        return self.latent_steps > 0 or self.generator_steps > 0


@dataclasses.dataclass
class SourceIdentity:
    """Who speaks: the encoder's latent (conditions the edits and anchors the motion posterior), the latent the
    frames are built on, and the generator that renders them."""

    w_id: torch.Tensor  # [1, num_ws, w_dim]
    pivot: torch.Tensor  # [1, num_ws, w_dim]; w_id itself without adaptation
    generator: nn.Module  # the model's generator, or a copy tuned on the source

    def render(self, edits: torch.Tensor) -> torch.Tensor:
        """edits [1, T, num_ws, w_dim] (Δ_mot + Δ_lip) -> frames [1, T, 3, R, R]."""
        return render_with(self.generator, self.pivot[:, None] + edits)

    def frames(self, model: StyleTalkerModel, motion: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Motion latents [1, T, M] and speech features [1, T, A] -> this face's frames, uint8 [T, R, R, 3] on the
        CPU: the edits ``model`` makes for them (conditioned on ``w_id``), rendered on the pivot."""
        return to_uint8(self.render(model.edits(self.w_id, motion, audio))[0].clamp(-1, 1)).cpu()


def source_identity(model: StyleTalkerModel, source: torch.Tensor, adaptation: Adaptation | None = None
                    ) -> SourceIdentity:
    """The identity of ``source`` (float [1, 3, R, R] in [-1, 1]), adapted when ``adaptation`` is enabled."""
    with torch.no_grad():
        w_id = model.identity(source)
    if adaptation is None or not adaptation.enabled:
        return SourceIdentity(w_id, w_id, model.generator)
    generator = copy.deepcopy(model.generator).train(False)
    generator.requires_grad_(False)
    with torch.enable_grad():
        pivot = w_id.clone().requires_grad_(True)
        _fit(lambda: generator(pivot), source, [pivot], adaptation.latent_steps, adaptation.latent_lr)
        pivot = pivot.detach()
        generator.requires_grad_(True)
        _fit(lambda: generator(pivot), source, list(generator.parameters()), adaptation.generator_steps,
             adaptation.generator_lr)
    generator.requires_grad_(False)
    return SourceIdentity(w_id, pivot, generator)


def _fit(render, target: torch.Tensor, parameters: list[torch.Tensor], steps: int, lr: float) -> None:
    if steps == 0:
        return
    optimizer = torch.optim.Adam(parameters, lr=lr)
    for _ in range(steps):
        loss = F.l1_loss(render(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
