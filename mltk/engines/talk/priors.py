"""Autoregressive priors over motion latents given speech: a Gaussian one, and one with a normalising flow.

Both read the sequence left to right with a GRU over ``[m_{t-1}, a_t]``
(the previous motion latent and this frame's audio feature), giving a state
``h_t`` and a diagonal Gaussian ``N(mu_t, sigma_t)``:

* ``GaussianARPrior`` (the baseline): ``p(m_t | m_<t, a_<=t) = N(m_t; mu_t, sigma_t)``.
* ``FlowARPrior`` (StyleTalker's): ``m_t = f(eps_t; h_t)`` with ``eps_t ~ N(mu_t, sigma_t)`` and ``f`` a stack
  of conditional affine couplings (RealNVP), so

      log p(m_t | ...) = log N(f^{-1}(m_t; h_t); mu_t, sigma_t) + log |det d f^{-1} / d m_t|

  and one audio can be mouthed with several, distinct head motions (a multi-modal mapping).

``log_prob`` uses the true previous latents (teacher forcing); ``sample`` feeds
its own draws back and carries the GRU state across calls, so long audio can be
sampled in chunks with bounded memory and the same result as one call.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_SIGMA_RANGE = (-5.0, 2.0)
LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Diagonal Gaussian log-density summed over the last dimension."""
    return (-0.5 * ((x - mean) * torch.exp(-log_sigma)).pow(2) - log_sigma - 0.5 * LOG_2PI).sum(-1)


class AffineCoupling(nn.Module):
    """One conditional affine coupling: the half ``keep`` passes through and sets scale and shift of the rest."""

    def __init__(self, dim: int, condition_dim: int, hidden: int, *, flip: bool):
        super().__init__()
        self.flip = flip
        self.split = dim // 2 if not flip else dim - dim // 2
        changed = dim - self.split
        self.net = nn.Sequential(nn.Linear(self.split + condition_dim, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, 2 * changed))
        nn.init.zeros_(self.net[-1].weight)  # starts as the identity map
        nn.init.zeros_(self.net[-1].bias)

    def _halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flip(-1) if self.flip else x
        return x[..., :self.split], x[..., self.split:]

    def _join(self, keep: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        x = torch.cat([keep, changed], -1)
        return x.flip(-1) if self.flip else x

    def _scale_shift(self, keep: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_scale, shift = self.net(torch.cat([keep, condition], -1)).chunk(2, -1)
        return 2.0 * torch.tanh(raw_scale / 2.0), shift  # log-scales bounded in (-2, 2) for stability

    def forward(self, eps: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """eps -> (m, log|det dm/deps|)."""
        keep, changed = self._halves(eps)
        log_scale, shift = self._scale_shift(keep, condition)
        return self._join(keep, changed * torch.exp(log_scale) + shift), log_scale.sum(-1)

    def inverse(self, m: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """m -> (eps, log|det deps/dm|)."""
        keep, changed = self._halves(m)
        log_scale, shift = self._scale_shift(keep, condition)
        return self._join(keep, (changed - shift) * torch.exp(-log_scale)), -log_scale.sum(-1)


class ConditionalFlow(nn.Module):
    """A stack of couplings with alternating halves: ``f(eps; h)`` and its exact inverse and log-determinant."""

    def __init__(self, dim: int, condition_dim: int, *, layers: int = 4, hidden: int = 64):
        super().__init__()
        if dim < 2:
            raise ValueError("a coupling flow needs at least 2 motion dimensions")
        self.couplings = nn.ModuleList(AffineCoupling(dim, condition_dim, hidden, flip=bool(i % 2))
                                       for i in range(layers))

    def forward(self, eps: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = eps.new_zeros(eps.shape[:-1])
        for coupling in self.couplings:
            eps, step = coupling(eps, condition)
            log_det = log_det + step
        return eps, log_det

    def inverse(self, m: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = m.new_zeros(m.shape[:-1])
        for coupling in reversed(self.couplings):
            m, step = coupling.inverse(m, condition)
            log_det = log_det + step
        return m, log_det


class GaussianARPrior(nn.Module):
    """p(m_t | m_<t, a_<=t) = N(mu_t, sigma_t) from a GRU; motion [B, T, M], audio [B, T, A]."""

    kind = "gaussian"

    def __init__(self, motion_dim: int, audio_dim: int, *, hidden: int = 128, flow_layers: int = 4):
        super().__init__()
        self.motion_dim = motion_dim
        self.rnn = nn.GRU(motion_dim + audio_dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 2 * motion_dim)

    def _base(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_sigma = self.head(state).chunk(2, -1)
        return mean, log_sigma.clamp(*LOG_SIGMA_RANGE)

    def _to_motion(self, eps: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return eps

    def _to_base(self, motion: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return motion, motion.new_zeros(motion.shape[:-1])

    def log_prob(self, motion: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Per-frame log-density [B, T] of the whole sequence, the true previous latent fed at each step."""
        previous = torch.cat([motion.new_zeros(motion.shape[0], 1, self.motion_dim), motion[:, :-1]], 1)
        states, _ = self.rnn(torch.cat([previous, audio], -1))
        mean, log_sigma = self._base(states)
        eps, log_det = self._to_base(motion, states)
        return gaussian_log_prob(eps, mean, log_sigma) + log_det

    @torch.no_grad()
    def sample(self, audio: torch.Tensor, *, generator: torch.Generator, carry=None,
               temperature: float = 1.0) -> tuple[torch.Tensor, tuple]:
        """audio [B, T, A] -> (motion [B, T, M], carry for the next chunk)."""
        batch, frames, _ = audio.shape
        hidden, previous = carry if carry is not None else (None, audio.new_zeros(batch, 1, self.motion_dim))
        out = []
        for t in range(frames):
            state, hidden = self.rnn(torch.cat([previous, audio[:, t:t + 1]], -1), hidden)
            mean, log_sigma = self._base(state)
            noise = torch.randn(mean.shape, generator=generator).to(mean.device)
            previous = self._to_motion(mean + temperature * torch.exp(log_sigma) * noise, state)
            out.append(previous)
        return torch.cat(out, 1), (hidden, previous)


class FlowARPrior(GaussianARPrior):
    """The Gaussian AR prior's base distribution pushed through a conditional flow ``f(eps; h_t)``."""

    kind = "flow"

    def __init__(self, motion_dim: int, audio_dim: int, *, hidden: int = 128, flow_layers: int = 4):
        super().__init__(motion_dim, audio_dim, hidden=hidden)
        self.flow = ConditionalFlow(motion_dim, hidden, layers=flow_layers, hidden=hidden)

    def _to_motion(self, eps: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.flow(eps, state)[0]

    def _to_base(self, motion: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow.inverse(motion, state)


PRIORS = {"gaussian": GaussianARPrior, "flow": FlowARPrior}


def build_prior(kind: str, motion_dim: int, audio_dim: int, *, hidden: int, flow_layers: int) -> GaussianARPrior:
    return PRIORS[kind](motion_dim, audio_dim, hidden=hidden, flow_layers=flow_layers)
