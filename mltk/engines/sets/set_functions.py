"""Set Transformer blocks (Lee et al. 2019): functions of a whole set at once, *not* mini-batch consistent.

    MAB(X, Y) = LN(H + rFF(H)),  H = LN(X + Attention(X, Y, Y))
    SAB(X)    = MAB(X, X)                        self-attention over the set
    ISAB(X)   = MAB(X, MAB(I, X))                m inducing points: linear in the set size
    PMA_k(X)  = MAB(seeds_k, rFF(X))             pooling into k learned seed vectors (rFF optional, see PMA)

In UMBC they only ever see the K slots of a slot set encoder, which are the
same however the set was chunked; in the plain Set Transformer baseline they
see the elements themselves. Masks (B, N) bool mark real elements of padded
sets (keys only: padded queries are computed and ignored).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MultiheadAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, y: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads

        def split(t):
            return t.view(b, t.shape[1], h, d // h).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(y)), split(self.v(y))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        attended = scores.softmax(-1) @ v
        return self.out(attended.transpose(1, 2).reshape(b, n, d))


class MAB(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention = MultiheadAttention(dim, heads)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor, y: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x + self.attention(x, y, key_mask))
        return self.norm2(h + self.ff(h))


class SAB(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.mab = MAB(dim, heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.mab(x, x, mask)


class ISAB(nn.Module):
    def __init__(self, dim: int, heads: int, inducing: int = 16):
        super().__init__()
        self.inducing = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, inducing, dim)))
        self.mab_in, self.mab_out = MAB(dim, heads), MAB(dim, heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        summary = self.mab_in(self.inducing.expand(x.shape[0], -1, -1), x, mask)
        return self.mab_out(x, summary)


class PMA(nn.Module):
    """Pooling by multihead attention: (B, N, dim) -> (B, seeds, dim).

    ``feedforward=True`` (the default) is the paper's PMA(X) = MAB(S, rFF(X)), rFF = row-wise Linear + ReLU;
    ``feedforward=False`` is the official Set Transformer and UMBC code's PMA(X) = MAB(S, X). The rFF is
    kept because it trained better here (``python benchmarks/sets.py pma``, benchmarks/results/sets.md):
    held-out mixture NLL per element after 400 steps, mean over seeds, rFF vs none: UMBC 3.502 vs 3.602
    (8 seeds), 3.450 vs 3.609 (full gradient), Set Transformer 2.520 vs 2.731 (6 seeds); on the ModelNet40
    subset the two are level within seed noise (UMBC accuracy 0.343 vs 0.369, 10 seeds, sd 0.07). Its
    ReLU units can die (then no gradient passes them); in those 57 runs none had all of them dead (fewest
    alive: 23 of 64). Our MAB (post-LayerNorm, two-layer rFF) is not the official one, which is one reason
    the official PMA's missing rFF need not carry over.
    """

    def __init__(self, dim: int, heads: int, seeds: int = 1, *, feedforward: bool = True):
        super().__init__()
        self.seeds = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, seeds, dim)))
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU()) if feedforward else nn.Identity()
        self.mab = MAB(dim, heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.mab(self.seeds.expand(x.shape[0], -1, -1), self.ff(x), mask)


def masked_pool(x: torch.Tensor, mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """DeepSets pooling of (B, N, d) over N: sum, mean, max or min, padded elements left out."""
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    m = mask[..., None]
    if how == "sum":
        return (x * m).sum(1)
    if how == "mean":
        return (x * m).sum(1) / m.sum(1).clamp(min=1)
    if how == "max":
        return x.masked_fill(~m, float("-inf")).amax(1)
    if how == "min":
        return x.masked_fill(~m, float("inf")).amin(1)
    raise ValueError(f"unknown pooling {how!r}; one of sum, mean, max, min")
