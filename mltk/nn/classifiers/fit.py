"""Training a fresh classifier on a small image set held in memory.

The evaluation protocol of dataset condensation (DC/DSA/DM's
``evaluate_synset``) and of anything else that scores a set of images by
how well a network learns from it: SGD with momentum and weight decay, the
learning rate x0.1 at half the epochs, mini-batches of a seeded shuffle (the
last one may be short), an optional augmentation per batch. It runs in one
process, with no checkpoints: it is meant for sets that train in seconds to
minutes. Everything random derives from ``seed``, so the same inputs and seed
give the same weights on the same device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mltk.core.seeding import generator

# augment(images float [B, C, H, W], generator) -> images [B, C, H, W]
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class FitSchedule:
    epochs: int
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    decay_at_half: bool = True  # lr x0.1 from epoch epochs // 2 on

    def lr_at(self, epoch: int) -> float:
        return self.lr * (0.1 if self.decay_at_half and epoch >= self.epochs // 2 else 1.0)


def fit_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, schedule: FitSchedule, *,
                   seed: int, device: torch.device, augment: Augment | None = None,
                   on_epoch: Callable[[int], None] | None = None) -> dict:
    """Train ``model`` in place on (images, labels); {"loss", "accuracy"} of the last epoch.

    images: [N, C, H, W], uint8 (scaled to [0, 1] per batch) or float (used as
    given, in the model's input space); labels: int64 [N]. The model is the
    caller's, initialised however the caller seeded it. ``on_epoch(done)`` is
    called after each epoch with the number of epochs done (for progress).
    """
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"fit_classifier: {len(images)} images and {len(labels)} labels; need the same, > 0")
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=schedule.lr, momentum=schedule.momentum,
                                weight_decay=schedule.weight_decay)
    labels = labels.to(device)
    images = images.to(device)
    count, step = len(labels), 0
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    for epoch in range(schedule.epochs):
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr_at(epoch)
        order = torch.randperm(count, generator=generator(seed, epoch, 0xF17)).to(device)
        totals.zero_()
        for start in range(0, count, schedule.batch_size):
            index = order[start:start + schedule.batch_size]
            batch = images[index]
            batch = batch.float().div_(255) if batch.dtype == torch.uint8 else batch
            if augment is not None:
                batch = augment(batch, generator(seed, step, 0xA06))
            logits = model(batch)
            loss = F.cross_entropy(logits, labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            with torch.no_grad():
                totals += torch.stack([loss.detach().double() * len(index),
                                       (logits.argmax(1) == labels[index]).sum().double(),
                                       torch.tensor(float(len(index)), dtype=torch.float64, device=device)])
        if on_epoch is not None:
            on_epoch(epoch + 1)
    model.eval()
    loss_sum, correct, seen = totals.tolist()
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)}
