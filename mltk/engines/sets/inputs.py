"""Checking the sets users hand in, cutting them into chunks, and dropping whole elements.

Bad input is refused with a one-line message: an empty set, a chunk whose feature size differs from the
chunks before it (named by its index), non-finite values (counted), a chunk size below one.
"""

from __future__ import annotations

import torch

from mltk.core.errors import ArtifactError, UsageError


class BadSetError(ArtifactError):
    """A set that cannot be encoded (exit 3, like other bad data)."""


def check_chunk(chunk: torch.Tensor, index: int, dim: int | None, batch: int | None) -> tuple[int, int]:
    """(feature size, batch) of a chunk (B, n, d), checked against the chunks before it."""
    if not isinstance(chunk, torch.Tensor) or chunk.dim() != 3:
        shape = tuple(chunk.shape) if isinstance(chunk, torch.Tensor) else type(chunk).__name__
        raise BadSetError(f"chunk {index}: expected a tensor (sets, elements, features), got {shape}",
                          hint="add a leading set dimension: chunk[None]")
    if dim is not None and chunk.shape[2] != dim:
        raise BadSetError(f"chunk {index}: has {chunk.shape[2]} features per element, the chunks before it {dim}",
                          hint="every chunk of a set must have the same feature size")
    if batch is not None and chunk.shape[0] != batch:
        raise BadSetError(f"chunk {index}: holds {chunk.shape[0]} sets, the chunks before it {batch}",
                          hint="stream the same sets in every chunk")
    bad = int((~torch.isfinite(chunk)).sum()) if chunk.is_floating_point() else 0
    if bad:
        raise BadSetError(f"chunk {index}: {bad} non-finite value(s) (NaN or inf)",
                          hint="drop or repair those elements before encoding")
    return int(chunk.shape[2]), int(chunk.shape[0])


def chunks_of(x: torch.Tensor, chunk_size: int, mask: torch.Tensor | None = None):
    """Consecutive chunks of ``chunk_size`` elements of sets (B, N, d) (with their masks when given)."""
    if chunk_size < 1:
        raise UsageError(f"chunk size {chunk_size}: must be at least 1", hint="pass a positive chunk size")
    for start in range(0, x.shape[1], chunk_size):
        part = x[:, start:start + chunk_size]
        yield part if mask is None else (part, mask[:, start:start + chunk_size])


def random_partition(n: int, parts: int, generator: torch.Generator) -> list[int]:
    """Sizes of a random partition of ``n`` elements into ``parts`` non-empty chunks."""
    parts = max(1, min(parts, n))
    cuts = torch.randperm(n - 1, generator=generator)[:parts - 1] + 1 if parts > 1 else torch.tensor([], dtype=torch.long)
    bounds = [0, *sorted(cuts.tolist()), n]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def drop_elements(mask: torch.Tensor, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Set-element dropout: each real element of (B, N) ``mask`` is dropped with probability ``rate``; every set
    keeps at least one element (its first kept by the draw, if all were dropped)."""
    if rate <= 0:
        return mask
    keep = torch.rand(mask.shape, generator=generator, device=mask.device) >= rate
    kept = mask & keep
    empty = kept.sum(1) == 0
    if empty.any():
        first = mask.float().argmax(1)
        kept[empty, first[empty]] = True
    return kept
