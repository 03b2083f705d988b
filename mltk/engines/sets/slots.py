"""The slot set encoder: a set of any size pooled into K slots, exactly the same whichever way it is chunked.

Per head, with queries Q = q(LN(S)) from K slots S (learned, or random slots
S = mu + softplus(sigma) * eps drawn once per set), keys K = k(x), values V = v(x)::

    W = Q K^T / sqrt(d / heads)                       (K x N)
    A = activation(W)                                 elementwise over the set (see ACTIVATIONS)
    numerator  = sum_i A_i V_i                        (K x d/heads)   } running sums over the set's elements:
    normaliser = sum_i A_i                            (K x 1)         } any partition, in any order, adds up the same
    slots_out  = LayerNorm(numerator / (normaliser + eps) [+ Q])

The encoder is mini-batch consistent because the only quantities that see
more than one element are the two sums: ``partial`` turns a chunk into its
sums, sums add, and ``finish`` divides once at the end. The ``softmax``
activation cannot subtract the set's maximum (it is not known while
streaming), so it clamps the pre-activation at 10 before ``exp`` as the
official code does. Padded elements (``mask`` False) get activation 0, so
they add nothing to either sum.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("softmax", "sigmoid", "slot-sigmoid", "slot-softmax", "slot-exp")
SOFTMAX_CLAMP = 10.0
EPS = 1e-20
MASKED_PREACTIVATION = -1e20


def attention_activation(scores: torch.Tensor, name: str, mask: torch.Tensor | None = None,
                         eps: float = EPS) -> torch.Tensor:
    """A = activation(W) for ``scores`` (B, heads, K, N); slot-* variants normalise over the K slots of each
    element, never over the set, so each element's column depends on that element alone. ``mask`` (B, N) bool."""
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], MASKED_PREACTIVATION)
    if name == "softmax":  # normalised over the set later, by the normaliser sum
        act = torch.exp(scores.clamp(max=SOFTMAX_CLAMP))
    elif name == "sigmoid":
        act = torch.sigmoid(scores)
    elif name == "slot-sigmoid":
        act = torch.sigmoid(scores)
        act = act / (act.sum(dim=-2, keepdim=True) + eps)
    elif name == "slot-softmax":
        act = scores.softmax(dim=-2)
    elif name == "slot-exp":
        act = torch.exp(scores - scores.amax(dim=-2, keepdim=True))
    else:
        raise ValueError(f"unknown attention activation {name!r}; one of {', '.join(ACTIVATIONS)}")
    if mask is not None:  # a fully padded column would otherwise be uniform over the slots
        act = act.masked_fill(~mask[:, None, None, :], 0.0)
    return act


class PartialSums(NamedTuple):
    """The running sums of a (part of a) set: numerator (B, heads, K, d/heads), normaliser (B, heads, K, 1)."""

    numerator: torch.Tensor
    normaliser: torch.Tensor

    def __add__(self, other: PartialSums) -> PartialSums:  # type: ignore[override]
        return PartialSums(self.numerator + other.numerator, self.normaliser + other.normaliser)

    def detach(self) -> PartialSums:
        return PartialSums(self.numerator.detach(), self.normaliser.detach())


class SlotSetEncoder(nn.Module):
    """Pool sets of ``dim_in``-vectors into ``num_slots`` slots of size ``dim`` (mini-batch consistent).

    ``forward(x (B, N, dim_in), mask (B, N) bool | None) -> (B, K, dim)``; for streaming:
    ``queries = sample_queries(B)`` once per set, ``sums = partial(chunk, queries)`` per chunk (sums add),
    ``finish(sums, queries)``.
    """

    def __init__(self, *, dim_in: int, num_slots: int, dim: int, slot_dim: int | None = None, heads: int = 4,
                 slot_type: str = "learned", activation: str = "softmax", slot_residual: bool = True,
                 norm_after: bool = True, eps: float = EPS):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown attention activation {activation!r}; one of {', '.join(ACTIVATIONS)}")
        if slot_type not in ("learned", "random"):
            raise ValueError(f"slot_type must be learned or random, got {slot_type!r}")
        slot_dim = slot_dim or dim
        self.num_slots, self.dim, self.heads = num_slots, dim, heads
        self.slot_type, self.activation, self.slot_residual, self.eps = slot_type, activation, slot_residual, eps
        if slot_type == "random":  # initialised as in "Weight Uncertainty in Neural Networks" (official code)
            self.slot_mean = nn.Parameter(torch.empty(num_slots, slot_dim).uniform_(-0.2, 0.2))
            self.slot_scale = nn.Parameter(torch.empty(num_slots, slot_dim).uniform_(-5.0, -4.0))
        else:
            self.slots = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, num_slots, slot_dim))[0])
        self.norm_slots = nn.LayerNorm(slot_dim)
        self.q = nn.Linear(slot_dim, dim)
        self.k = nn.Linear(dim_in, dim)
        self.v = nn.Linear(dim_in, dim)
        self.norm_after = nn.LayerNorm(dim) if norm_after else nn.Identity()

    def sample_queries(self, batch: int) -> torch.Tensor:
        """Q = q(LN(S)) for ``batch`` sets, (B, K, dim): random slots are drawn here, once per set (in training;
        in eval mode every set uses the slot means)."""
        if self.slot_type == "random":
            slots = self.slot_mean.expand(batch, -1, -1)
            if self.training:
                slots = slots + torch.randn_like(slots) * F.softplus(self.slot_scale)
        else:
            slots = self.slots.expand(batch, -1, -1)
        return self.q(self.norm_slots(slots))

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.dim // self.heads).transpose(1, 2)  # (B, heads, n, d/heads)

    def partial(self, x: torch.Tensor, queries: torch.Tensor, mask: torch.Tensor | None = None) -> PartialSums:
        """The sums of the chunk ``x`` (B, n, dim_in) of every set, for the set's ``queries`` (B, K, dim)."""
        q, k, v = self._split_heads(queries), self._split_heads(self.k(x)), self._split_heads(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dim // self.heads)  # (B, heads, K, n)
        act = attention_activation(scores, self.activation, mask, self.eps)
        return PartialSums(act @ v, act.sum(dim=-1, keepdim=True))

    def empty_sums(self, queries: torch.Tensor) -> PartialSums:
        b, k, _ = queries.shape
        zeros = queries.new_zeros(b, self.heads, k, self.dim // self.heads)
        return PartialSums(zeros, queries.new_zeros(b, self.heads, k, 1))

    def finish(self, sums: PartialSums, queries: torch.Tensor) -> torch.Tensor:
        """The slots (B, K, dim) from a whole set's sums."""
        pooled = sums.numerator / (sums.normaliser + self.eps)
        b, _, k, _ = pooled.shape
        pooled = pooled.transpose(1, 2).reshape(b, k, self.dim)
        if self.slot_residual:
            pooled = pooled + queries
        return self.norm_after(pooled)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        queries = self.sample_queries(x.shape[0])
        return self.finish(self.partial(x, queries, mask), queries)

    def pre_pooling_parameter_names(self) -> list[str]:
        """What the official ``grad_correct`` scales by N/n: every parameter but ``norm_after``'s."""
        return [name for name, _ in self.named_parameters() if not name.startswith("norm_after")]
