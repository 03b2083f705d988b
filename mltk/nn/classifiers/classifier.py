"""The one classifier type every mltk engine trains, attacks, condenses and saves.

An ``ImageClassifier`` takes images in [0, 1] and normalises them itself, so a
user feeding raw pixels, or an attack clipping to its epsilon-ball in pixel
space, can never get the normalisation wrong. It also carries the JSON spec
that rebuilds its architecture from an artifact card; weights travel
separately (in safetensors), never as pickled modules.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class ImageClassifier(nn.Module):
    """Normalisation followed by an architecture from the registry.

    ``forward(x)``: x float [B, C, H, W] in [0, 1] -> logits [B, num_classes].
    ``embed(x)``:   x float [B, C, H, W] in [0, 1] -> penultimate features [B, D].

    ``net`` is the architecture proper, so the state_dict keys are the
    architecture's own names under the prefix ``net.``. ``mean`` and ``std``
    are non-persistent buffers shaped [1, C, 1, 1]: they follow ``.to(device)``
    but are rebuilt from the spec rather than stored with the weights.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        arch: str,
        args: dict,
        mean: Sequence[float],
        std: Sequence[float],
    ):
        super().__init__()
        if not callable(getattr(net, "embed", None)):
            raise TypeError(
                f"{type(net).__name__} has no embed(x) method; every mltk net needs one"
            )
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        self.net = net
        self.arch = arch
        self.args = copy.deepcopy(dict(args))
        # Plain floats for the spec: reading them back from the float32 buffers
        # would turn 0.485 into 0.48500001430511475 in every card.
        self._mean_values = [float(value) for value in mean]
        self._std_values = [float(value) for value in std]
        channels = len(self._mean_values)
        self.register_buffer(
            "mean", torch.tensor(self._mean_values).view(1, channels, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(self._std_values).view(1, channels, 1, 1), persistent=False
        )

    def normalize(self, x: Tensor) -> Tensor:
        """[B, C, H, W] in [0, 1] -> [B, C, H, W] standardised per channel."""
        return (x - self.mean) / self.std

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, H, W] in [0, 1] -> logits [B, num_classes]."""
        return self.net(self.normalize(x))

    def embed(self, x: Tensor) -> Tensor:
        """[B, C, H, W] in [0, 1] -> pooled penultimate features [B, D]."""
        return self.net.embed(self.normalize(x))

    @property
    def spec(self) -> dict:
        """JSON-serialisable recipe for ``mltk.nn.build_from_spec``.

        ``{"arch": str, "args": {num_classes, in_channels, image_size, every
        option}, "mean": [C floats], "std": [C floats]}``; a fresh copy each
        call, so editing it cannot change this model's record.
        """
        return {
            "arch": self.arch,
            "args": copy.deepcopy(self.args),
            "mean": list(self._mean_values),
            "std": list(self._std_values),
        }

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, mean={self._mean_values}, std={self._std_values}"
