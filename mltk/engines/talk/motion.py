"""The conditional sequential VAE of head motion, with motion latents that do not carry the lips.

Posterior, over a clip's T frames (``MotionPosterior``)::

    q(m_t | w_{1:T}, a_{1:T}) = N(mu_t, sigma_t),   (mu, log sigma) = BiGRU([pose_t - w_id, a_t])_t

where ``pose_t = E(mask_mouth(x_t))`` is the frozen image encoder's latent of
frame t **with the mouth greyed out**, ``w_id`` the latent of the reference
frame and ``a_t`` the frozen audio feature. Decoder (``MotionEdit``)::

    w_t = w_id + Δ_mot(m_t, w_id) + Δ_lip(a_t, w_id)

Why the latents leave the lips out (our reading of "disentangled from lip
movements"): the posterior never sees the mouth, and the mouth comes from
speech through ``Δ_lip``, which the generator stage trained and this stage
keeps frozen. So ``m_t`` can hold head pose, gaze and expression, but what
the lips do is left to the audio, and a driving video's motion moves a
source face without mouthing the driving speaker's words.

The KL term against an autoregressive prior (``priors.py``) is estimated by
Monte Carlo from the posterior sample: ``log q(m_t|.) - log p(m_t|m_<t, a_<=t)``.
"""

from __future__ import annotations

import torch
from torch import nn

from mltk.engines.talk.encoders import LatentEdit
from mltk.engines.talk.priors import gaussian_log_prob


class MotionPosterior(nn.Module):
    """(pose offsets [B, T, num_ws, w_dim], audio [B, T, A]) -> (mean, log sigma) [B, T, M]."""

    def __init__(self, num_ws: int, w_dim: int, audio_dim: int, motion_dim: int, *, hidden: int = 128):
        super().__init__()
        self.reduce = nn.Sequential(nn.Linear(num_ws * w_dim, hidden), nn.LeakyReLU(0.2))
        self.rnn = nn.GRU(hidden + audio_dim, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, 2 * motion_dim)

    def forward(self, pose_offsets: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.reduce(pose_offsets.flatten(-2))
        states, _ = self.rnn(torch.cat([features, audio], -1))
        mean, log_sigma = self.head(states).chunk(2, -1)
        return mean, log_sigma.clamp(-6.0, 2.0)


class MotionEdit(LatentEdit):
    """``Δ_mot(m_t, w_id)``: motion latents [..., M] -> a W+ edit of the identity latent."""


def sample_posterior(mean: torch.Tensor, log_sigma: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """The reparameterised draw m = mu + sigma * eps: eps is ``noise`` when given (training passes each rank its
    slice of the global batch's draw), else from the global generator."""
    eps = torch.randn_like(mean) if noise is None else noise.to(mean.dtype)  # the batch is on mean's device
    return mean + torch.exp(log_sigma) * eps


def monte_carlo_kl(motion: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor,
                   prior_log_prob: torch.Tensor) -> torch.Tensor:
    """Per-frame KL estimate [B, T]: log q(m_t) - log p(m_t | m_<t, a_<=t) at the posterior draw ``motion``."""
    return gaussian_log_prob(motion, mean, log_sigma) - prior_log_prob
