"""The instance-discrimination (NT-Xent) loss of SimCLR and RoCL, one value per positive pair.

z1, z2 [B, D] are two views of the same B instances. Every one of the 2B
embeddings must pick its partner out of the other 2B - 1 by cosine
similarity at temperature T; an instance's loss is the mean of its two
directions. RoCL's default temperature is 0.5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nt_xent_per_pair(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """z1, z2 [B, D] -> loss [B] (the mean of the two directions of each pair)."""
    batch = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    similarity = z @ z.t() / temperature
    similarity = similarity.masked_fill(torch.eye(2 * batch, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(batch, 2 * batch), torch.arange(0, batch)]).to(z.device)
    per_view = F.cross_entropy(similarity, partner, reduction="none")
    return 0.5 * (per_view[:batch] + per_view[batch:])


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """The mean NT-Xent loss of the pairs (z1[i], z2[i]) -> 0-d."""
    return nt_xent_per_pair(z1, z2, temperature).mean()


def negative_cosine(z1: Tensor, z2: Tensor) -> Tensor:
    """1 - mean cosine similarity of the pairs (z1[i], z2[i]) -> 0-d (0 when every pair agrees)."""
    return 1.0 - F.cosine_similarity(z1, z2, dim=1).mean()
