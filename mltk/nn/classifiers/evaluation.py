"""Accuracy and loss of a classifier on a labelled image set.

Always in float32, whatever precision the model trained in, so that the
figures a run reports at its end are the ones ``mltk eval`` gives its artifact.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mltk.core.distributed import DistInfo, all_reduce_sum


@torch.no_grad()
def evaluate_classifier(model: torch.nn.Module, dataset, *, batch_size: int, device: torch.device,
                        dist: DistInfo | None = None,
                        on_batch: Callable[[int], object] | None = None) -> dict:
    """{"accuracy", "loss", "count"} of ``model`` on ``dataset`` (uint8 images [N, C, H, W], labels [N]).

    Under data parallelism each rank scores a contiguous shard and the sums
    are added across ranks, so every rank returns the whole-set figures.
    ``on_batch`` is called with the number of this rank's images scored so far
    (a progress bar).
    """
    dist = dist or DistInfo()
    was_training = model.training
    model.eval()
    total = len(dataset.labels)
    shard = -(-total // dist.world_size)
    start, stop = dist.rank * shard, min(total, (dist.rank + 1) * shard)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # correct, loss, count
    for begin in range(start, stop, batch_size):
        end = min(stop, begin + batch_size)
        images = dataset.images[begin:end].to(device).float().div_(255)
        labels = dataset.labels[begin:end].to(device)
        logits = model(images)
        sums[0] += (logits.argmax(1) == labels).sum()
        sums[1] += F.cross_entropy(logits.float(), labels, reduction="sum")
        sums[2] += end - begin
        if on_batch is not None:
            on_batch(end - start)
    all_reduce_sum(sums, dist)
    model.train(was_training)
    correct, loss, count = sums.tolist()
    return {"accuracy": correct / max(count, 1), "loss": loss / max(count, 1), "count": int(count)}
