"""Distribution matching (DM, Zhao & Bilen 2023): the objective KFS and the ``dm`` baseline minimise.

Each iteration samples a fresh, frozen random network psi and one DSA draw
per class, applied alike to that class's real and synthetic images::

    L = sum_c || mean_{x in real_c} psi(A_c(x)) - mean_{s in syn_c} psi(A_c(s)) ||^2

All classes are embedded in one call (for a batch-norm network this is the
reference's joint-embedding branch; for instance norm it is the same as
per-class calls). Under data parallelism each rank embeds its slice of every
class's real batch and the per-class sums are added across ranks, so N ranks
compute the loss of one process with the whole batch; the synthetic side is
computed in full on every rank and needs no gradient all-reduce.
"""

from __future__ import annotations

import torch
from torch import nn

from mltk.core.distributed import DistInfo, all_reduce_sum
from mltk.core.seeding import seed_step
from mltk.engines.condense.dsa import Draw, SiameseAugment

# Real images are embedded (without gradients) in chunks of at most this many input floats: it
# bounds memory for large images and leaves small ones (digits) in one call, which is fastest.
REAL_CHUNK_FLOATS = 1 << 22


class RandomEmbedder:
    """A frozen network re-initialised at random for every iteration; ``embed`` maps normalised images to features.

    net: a module with ``embed(x)`` (the architecture itself, without the
    [0, 1] normalisation of ``ImageClassifier``). Re-initialising in place is
    the same as building a fresh network and avoids re-allocating it.
    """

    def __init__(self, net: nn.Module):
        self.net = net
        for param in net.parameters():
            param.requires_grad_(False)
        net.train()  # as the reference: batch norm, if any, uses the batch's statistics
        self.batch_dependent = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())

    def resample(self, seed: int, iteration: int, device: torch.device) -> None:
        """Fresh weights, a function of (seed, iteration) only: the same on every rank and after a resume."""
        seed_step(seed, iteration, 0, device)
        with torch.no_grad():
            for module in self.net.modules():
                if module is not self.net and hasattr(module, "reset_parameters"):
                    module.reset_parameters()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.embed(images)

    @torch.no_grad()
    def embed_real(self, images: torch.Tensor) -> torch.Tensor:
        chunk = max(1, REAL_CHUNK_FLOATS // images[0].numel())
        if self.batch_dependent or len(images) <= chunk:
            return self.net.embed(images)
        return torch.cat([self.net.embed(part) for part in images.split(chunk)])


def real_class_means(embedder: RandomEmbedder, real: torch.Tensor, *, augment: SiameseAugment, draw: Draw,
                     batch_per_class: int, dist: DistInfo) -> torch.Tensor:
    """Mean embedding of every class's real batch: real [classes, b, C, H, W] (this rank's b) -> [classes, D].

    ``batch_per_class`` is the global batch per class (b times the ranks).
    """
    classes, local = real.shape[:2]
    groups = torch.arange(classes).repeat_interleave(local)
    features = embedder.embed_real(augment(real.flatten(0, 1), draw, groups))
    sums = features.view(classes, local, -1).sum(dim=1)
    all_reduce_sum(sums, dist)
    return sums / batch_per_class


def synthetic_class_means(embedder: RandomEmbedder, synthetic: torch.Tensor, *, augment: SiameseAugment,
                          draw: Draw) -> torch.Tensor:
    """Mean embedding of every class's synthetic images: [classes, S, C, H, W] -> [classes, D] (differentiable)."""
    classes, count = synthetic.shape[:2]
    groups = torch.arange(classes).repeat_interleave(count)
    features = embedder.embed(augment(synthetic.flatten(0, 1), draw, groups))
    return features.view(classes, count, -1).mean(dim=1)


def matching_loss(real_means: torch.Tensor, synthetic_means: torch.Tensor) -> torch.Tensor:
    """Sum over classes of the squared distance between the mean embeddings: [classes, D] x2 -> scalar."""
    return (real_means - synthetic_means).pow(2).sum()
