"""What each ``--method`` stores, where it starts and how it trains.

| method  | stores (the synthetic set)     | starts from                         | trains                               |
|---------|--------------------------------|-------------------------------------|--------------------------------------|
| kfs     | latent codes + shared decoders | down-sampled random real images     | decoder warm start, then DM (Adam)   |
| dm      | IPC images per class, pixels   | random real images                  | DM on the pixels (SGD)               |
| random  | IPC images per class, pixels   | random real images                  | -                                    |
| herding | IPC images per class, pixels   | herding on ConvNet features         | -                                    |

The recipe runs the same steps for every method; a :class:`CodeSet` or a
:class:`PixelSet` supplies what differs: the stored tensors, the images that
matching sees, the optimisers, and the storage accounting. All images live in
the dataset's normalised space, ``(x - mean) / std``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from mltk.engines.condense import kfs
from mltk.engines.condense.config import CondenseOptimSpec, KfsSpec
from mltk.engines.condense.storage import KfsLayout, StorageReport


@dataclasses.dataclass(frozen=True)
class MethodSettings:
    name: str
    stores: Literal["codes", "pixels"]
    start: Literal["random", "herding"]  # which real images the synthetic set starts from
    matches: bool  # whether distribution matching steps run


METHODS = {m.name: m for m in (MethodSettings("kfs", stores="codes", start="random", matches=True),
                               MethodSettings("dm", stores="pixels", start="random", matches=True),
                               MethodSettings("random", stores="pixels", start="random", matches=False),
                               MethodSettings("herding", stores="pixels", start="herding", matches=False))}


class PixelSet:
    """IPC images per class, stored as their pixels: images [classes, ipc, C, H, W]."""

    layout: KfsLayout | None = None
    warmup_steps = 0

    def __init__(self, images: torch.Tensor):
        self.images = nn.Parameter(images)

    def optimizers(self, optim: CondenseOptimSpec) -> dict[str, torch.optim.Optimizer]:
        return {"match": torch.optim.SGD([self.images], lr=optim.lr_images, momentum=optim.momentum,
                                         weight_decay=optim.weight_decay)}

    def matched_images(self, pairs_generator: torch.Generator) -> torch.Tensor:
        """The images one matching step compares with the real ones: [classes, n, C, H, W], differentiable."""
        return self.images

    def objective(self, matching_loss: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return matching_loss

    def decode(self) -> torch.Tensor:
        return self.images.detach()

    def record_fields(self) -> dict:
        return {}

    def stored_tensors(self) -> dict[str, torch.Tensor]:
        return {"images": self.images.detach()}

    def load_stored(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.images.copy_(tensors["images"])

    def storage(self, *, budget_floats: int, full_dataset_floats: int) -> StorageReport:
        classes, ipc = self.images.shape[:2]
        return StorageReport(budget_floats=budget_floats, stored_floats=self.images.numel(),
                             synthetic_images=classes * ipc, images_per_class=ipc,
                             full_dataset_floats=full_dataset_floats)


class CodeSet:
    """KFS: latent codes per class decoded by tiny decoders that every class shares (``kfs.FactorizedSet``).

    The decoders first learn to redraw real images from their down-sampled codes
    (``warmup_steps`` steps of their own optimiser), then codes and decoders are matched together.
    """

    def __init__(self, layout: KfsLayout, spec: KfsSpec):
        self.layout = layout
        self.spec = spec
        self.warmup_steps = spec.warmup_steps
        self.fset = kfs.FactorizedSet(layout, activation=spec.activation, upsample=spec.upsample,
                                      residual=spec.residual)

    def to(self, device: torch.device) -> CodeSet:
        self.fset.to(device)
        return self

    def start_from(self, real: torch.Tensor) -> None:
        """Codes from real images [classes * codes_per_class, C, H, W], class by class, down-sampled."""
        with torch.no_grad():
            self.fset.codes.copy_(kfs.downsample(real, self.layout.latent_shape).view_as(self.fset.codes))

    def optimizers(self, optim: CondenseOptimSpec) -> dict[str, torch.optim.Optimizer]:
        decoders = self.fset.decoders
        return {"warmup": torch.optim.Adam(decoders.parameters(), lr=optim.warmup_lr,
                                           weight_decay=optim.weight_decay),
                "match": torch.optim.Adam([{"params": [self.fset.codes], "lr": optim.lr},
                                           {"params": list(decoders.parameters()), "lr": optim.lr_decoders}],
                                          weight_decay=optim.weight_decay)}

    def warmup_loss(self, real: torch.Tensor) -> torch.Tensor:
        return kfs.warmup_loss(self.fset, real)

    def matched_images(self, pairs_generator: torch.Generator) -> torch.Tensor:
        """Every (code, decoder) pair, or ``kfs.pairs_per_class`` of them drawn by ``pairs_generator``."""
        total = self.layout.images_per_class
        pairs = None
        if 0 < self.spec.pairs_per_class < total:
            order = torch.randperm(total, generator=pairs_generator)
            pairs = order[:self.spec.pairs_per_class].to(self.fset.codes.device)
        return self.fset.decode(pairs)

    def objective(self, matching_loss: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        if not self.spec.div_weight:
            return matching_loss
        return matching_loss + self.spec.div_weight * kfs.diversity_penalty(images, self.layout.decoders)

    def decode(self) -> torch.Tensor:
        with torch.no_grad():
            return self.fset.decode()

    def record_fields(self) -> dict:
        return {"decoder_spread": kfs.decoder_spread(self.decode(), self.layout.decoders)}

    def stored_tensors(self) -> dict[str, torch.Tensor]:
        return self.fset.stored_tensors()

    def load_stored(self, tensors: dict[str, torch.Tensor]) -> None:
        self.fset.load_stored(tensors)

    def storage(self, *, budget_floats: int, full_dataset_floats: int) -> StorageReport:
        layout = self.layout
        return StorageReport(budget_floats=budget_floats, stored_floats=layout.stored_floats,
                             synthetic_images=layout.images_per_class * layout.num_classes,
                             images_per_class=layout.images_per_class, full_dataset_floats=full_dataset_floats)
