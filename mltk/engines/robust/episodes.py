"""N-way K-shot tasks drawn from a class pool, and the augmented views of a support set.

A task depends only on its generator (seeded from the run seed, the step and
the task's index), never on the model: every method, rank layout and resumed
run sees the same tasks for a seed.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from mltk.core.errors import UsageError
from mltk.core.seeding import derive_seed
from mltk.data.images.resized_crop import random_resized_crop
from mltk.engines.robust.domains import ClassPool


@dataclasses.dataclass
class Task:
    """support float [N*K, C, S, S], support_labels [N*K] in [0, N); query [N*Q, ...], query_labels [N*Q]."""

    support: Tensor
    support_labels: Tensor
    query: Tensor
    query_labels: Tensor
    classes: list[str]


def check_task_shape(pool: ClassPool, *, n_way: int, k_shot: int, queries: int, where: str) -> None:
    """UsageErrors for tasks this pool cannot give: too few classes, or a class with too few images."""
    if n_way > len(pool.names):
        raise UsageError(f"{where}: {n_way}-way tasks need {n_way} classes, {pool.domain} offers {len(pool.names)}",
                         hint="lower the number of ways, or give more classes to this split")
    need = k_shot + queries
    for name, members in zip(pool.names, pool.members, strict=True):
        if len(members) < need:
            raise UsageError(f"{where}: class {name!r} of {pool.domain} has {len(members)} images, a task takes "
                             f"{k_shot} shots + {queries} queries = {need}",
                             hint="lower the shots or queries")


def sample_task(pool: ClassPool, *, n_way: int, k_shot: int, queries: int, generator: torch.Generator) -> Task:
    classes = torch.randperm(len(pool.names), generator=generator)[:n_way].tolist()
    support, query = [], []
    for members in (pool.members[c] for c in classes):
        rows = members[torch.randperm(len(members), generator=generator)[:k_shot + queries]]
        support.append(rows[:k_shot])
        query.append(rows[k_shot:])
    labels = torch.arange(n_way, device=pool.images.device)  # the pool may already sit on the GPU
    return Task(pool.images[torch.cat(support)], labels.repeat_interleave(k_shot),
                pool.images[torch.cat(query)], labels.repeat_interleave(queries), [pool.names[c] for c in classes])


def task_generator(seed: int, *indices: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *indices))


def split_classes(pool: ClassPool, *, train_share: float, seed: int) -> tuple[ClassPool, ClassPool]:
    """(meta-training classes, unseen classes): a seeded partition of the pool's classes."""
    order = torch.randperm(len(pool.names), generator=task_generator(seed, 7919)).tolist()
    cut = max(1, min(len(order) - 1, round(train_share * len(order))))
    return pool.classes(sorted(order[:cut])), pool.classes(sorted(order[cut:]))


def augmented_view(images: Tensor, *, crop_scale: float, flip: bool, generator: torch.Generator) -> Tensor:
    """A random resized crop (scale [crop_scale, 1]) of each image, flipped left-right at random if ``flip``."""
    return random_resized_crop(images, scale=(crop_scale, 1.0), flip=flip, generator=generator,
                               global_batch=images.shape[0]).clamp(0, 1)
