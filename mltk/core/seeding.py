"""Seeds that make runs repeatable and resumable.

Every random draw in a training step (augmentation, dropout, masks) comes from
the global torch generator re-seeded at the start of the step from (run seed,
step, rank). A run resumed at step N then draws exactly what an uninterrupted
run draws at step N, with no generator state to save.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (stable across processes and versions)."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def seed_step(seed: int, step: int, rank: int = 0, device: torch.device | None = None) -> None:
    """Re-seed the global generators of the CPU and of ``device`` for one training step.

    Not ``torch.manual_seed``: on a CUDA build it queues a seed for every GPU,
    recording a stack trace each time, which costs more than a small step.
    """
    value = derive_seed(seed, step, rank)
    torch.default_generator.manual_seed(value)
    if device is not None and device.type == "cuda":
        torch.cuda.manual_seed(value)


def generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded from ``parts`` (data order, holdout splits)."""
    return torch.Generator().manual_seed(derive_seed(*parts))
