"""Class prototypes, cosine nearest-class-mean classification and the incremental prototype loss.

A prototype is the mean of a class's L2-normalised features, normalised again
(a direction). Classification picks the prototype of largest cosine
similarity among the classes seen so far. The incremental loss is the
official ``IncrementalKPTFixPNLoss``: the session's novel prototypes are the
per-class means of the current batch, the old prototypes are fixed, and the
logits are ``temperature * cos(feature, [novel | old])`` under cross-entropy
with each shot's novel class (temperature 1 in the official config).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_prototypes(features: torch.Tensor, labels: torch.Tensor, classes: list[int] | tuple[int, ...]) -> torch.Tensor:
    """features [N, D], labels [N] -> unit prototypes [len(classes), D], row k for ``classes[k]``."""
    normalized = F.normalize(features, dim=1)
    rows = []
    for label in classes:
        members = normalized[labels == label]
        if len(members) == 0:
            raise ValueError(f"class {label} has no example to build its prototype from")
        rows.append(members.mean(0))
    return F.normalize(torch.stack(rows), dim=1)


def cosine_ncm(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """features [N, D], prototypes [K, D] -> index of the nearest prototype by cosine similarity, int64 [N]."""
    return (F.normalize(features, dim=1) @ F.normalize(prototypes, dim=1).T).argmax(1)


def prototype_loss(features: torch.Tensor, labels: torch.Tensor, novel_classes: tuple[int, ...],
                   old_prototypes: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of each shot against [the batch's novel prototypes | the fixed old ones].

    features [B, D] (every class of ``novel_classes`` present), labels [B], old_prototypes [K, D].
    """
    novel = class_prototypes(features, labels, novel_classes)
    prototypes = torch.cat([novel, F.normalize(old_prototypes, dim=1)])
    logits = temperature * F.normalize(features, dim=1) @ prototypes.T
    lookup = {label: k for k, label in enumerate(novel_classes)}
    targets = torch.tensor([lookup[int(label)] for label in labels.tolist()], device=features.device)
    return F.cross_entropy(logits, targets)
