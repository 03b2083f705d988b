"""Which images go into which training step, on which rank.

An epoch is a seeded permutation of the training set cut into global batches
of ``batch_size``; the last partial batch is dropped so every step has the same
size. Under data parallelism rank r of w takes the r-th contiguous slice of
``batch_size / w`` images of each global batch: the ranks together see exactly
the batch one process would, which makes N ranks equivalent to one. Because a
step's images depend only on (seed, epoch, step in epoch), a resumed run picks
up mid-epoch with no loader state to save.
"""

from __future__ import annotations

import torch

from mltk.core.errors import ConfigError
from mltk.core.seeding import generator


def per_rank_batch(batch_size: int, world_size: int) -> int:
    if batch_size % world_size:
        raise ConfigError([f"train.batch_size: {batch_size} does not split evenly over {world_size} ranks"],
                          hint="choose a batch size divisible by the number of processes")
    return batch_size // world_size


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    steps = num_examples // batch_size
    if steps == 0:
        raise ConfigError([f"train.batch_size: {batch_size} is larger than the training set "
                           f"({num_examples} images)"], hint="lower train.batch_size")
    return steps


def epoch_order(num_examples: int, *, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of ``range(num_examples)`` used in ``epoch``: int64 [num_examples]."""
    return torch.randperm(num_examples, generator=generator(seed, epoch, 0x5EED))


def step_indices(order: torch.Tensor, step_in_epoch: int, *, batch_size: int,
                 rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """This rank's slice of global batch ``step_in_epoch``: int64 [batch_size / world_size]."""
    local = per_rank_batch(batch_size, world_size)
    start = step_in_epoch * batch_size + rank * local
    return order[start:start + local]
