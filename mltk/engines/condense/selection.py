"""Choosing real images per class: the random and herding baselines, and real initialisation.

Both baselines store IPC real images per class, which is exactly the budget
in floats. Herding (Welling 2009, as a coreset baseline in DC-Bench) adds, one
at a time, the image whose feature brings the running mean of the chosen set
closest to the class's mean feature.
"""

from __future__ import annotations

import torch

from mltk.core.seeding import generator


def class_indices(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """Indices of each class's images, in dataset order: ``num_classes`` int64 tensors."""
    return [(labels == c).nonzero().squeeze(1) for c in range(num_classes)]


def random_per_class(per_class: list[torch.Tensor], count: int, *, seed: int, purpose: int = 0) -> torch.Tensor:
    """``count`` distinct random indices of every class: int64 [classes, count], a function of the seed."""
    chosen = []
    for c, indices in enumerate(per_class):
        order = torch.randperm(len(indices), generator=generator(seed, purpose, c))
        chosen.append(indices[order[:count]])
    return torch.stack(chosen)


def herding(features: torch.Tensor, count: int) -> torch.Tensor:
    """Herding selection: features [N, D] of one class -> ``count`` positions into it, in the order chosen."""
    target = features.mean(dim=0)
    chosen: list[int] = []
    running = torch.zeros_like(target)
    available = torch.ones(len(features), dtype=torch.bool)
    for step in range(1, count + 1):
        candidate_means = (running.unsqueeze(0) + features) / step  # [N, D]
        distance = (candidate_means - target).pow(2).sum(dim=1)
        distance[~available] = float("inf")
        best = int(distance.argmin())
        chosen.append(best)
        available[best] = False
        running += features[best]
    return torch.tensor(chosen, dtype=torch.int64)
