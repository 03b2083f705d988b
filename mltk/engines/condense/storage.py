"""Storage accounting: every method spends the same budget of stored floats.

The budget of IPC images per class is ``ipc * classes * C * H * W`` floats.
Pixel methods (random, herding, dm) store exactly that many pixels. KFS
stores ``classes * M`` latent codes of ``c_z * h * w`` floats plus every
weight and bias of its K decoders, and decodes M * K images per class::

    stored = classes * M * c_z * h * w + K * (hidden * c_z * 9 + hidden + C * hidden * 9 + C) <= budget

Not counted, for any method: the labels (implied by the order of the stored
tensors) and the 2 * C normalisation constants of the dataset.
"""

from __future__ import annotations

import dataclasses
import math

from mltk.core.errors import ConfigError

KERNEL = 3  # decoder convolutions are 3x3


def budget_floats(ipc: int, num_classes: int, image_shape: tuple[int, int, int]) -> int:
    """Floats in ``ipc`` images per class: the budget every method gets."""
    return ipc * num_classes * math.prod(image_shape)


def decoder_floats(*, latent_channels: int, hidden: int, image_channels: int) -> int:
    """Weights and biases of one decoder: conv3x3(c_z -> hidden) and conv3x3(hidden -> C)."""
    first = hidden * latent_channels * KERNEL * KERNEL + hidden
    second = image_channels * hidden * KERNEL * KERNEL + image_channels
    return first + second


def latent_side(image_side: int, downsample: int) -> int:
    return max(1, image_side // downsample)


@dataclasses.dataclass(frozen=True)
class KfsLayout:
    """How a KFS condensed set spends its floats.

    codes: [num_classes, codes_per_class, *latent_shape]; decoders: K of
    ``floats_per_decoder`` each; images decoded per class: codes_per_class * decoders.
    """

    num_classes: int
    codes_per_class: int
    latent_shape: tuple[int, int, int]  # (c_z, h, w)
    image_shape: tuple[int, int, int]  # (C, H, W)
    decoders: int
    hidden: int

    @property
    def floats_per_code(self) -> int:
        return math.prod(self.latent_shape)

    @property
    def floats_per_decoder(self) -> int:
        return decoder_floats(latent_channels=self.latent_shape[0], hidden=self.hidden,
                              image_channels=self.image_shape[0])

    @property
    def code_floats(self) -> int:
        return self.num_classes * self.codes_per_class * self.floats_per_code

    @property
    def decoder_floats(self) -> int:
        return self.decoders * self.floats_per_decoder

    @property
    def stored_floats(self) -> int:
        return self.code_floats + self.decoder_floats

    @property
    def images_per_class(self) -> int:
        return self.codes_per_class * self.decoders


def kfs_layout(*, ipc: int, num_classes: int, image_shape: tuple[int, int, int], downsample: int,
               latent_channels: int, decoders: int, hidden: int, codes_per_class: int = 0) -> KfsLayout:
    """The layout that fits the budget of ``ipc``; a ConfigError (exit 2) when none does.

    ``codes_per_class`` 0 takes as many codes as fit after the decoders. When
    the budget cannot hold the decoders plus one code per class, the error
    names the smallest IPC that can.
    """
    channels, height, width = image_shape
    problems = [f"kfs.{key}: must be at least 1, got {value}"
                for key, value in (("downsample", downsample), ("decoders", decoders), ("hidden", hidden))
                if value < 1]
    if latent_channels < 0:
        problems.append(f"kfs.latent_channels: must be 0 (the image's channels) or more, got {latent_channels}")
    if codes_per_class < 0:
        problems.append(f"kfs.codes_per_class: must be 0 (as many as fit) or more, got {codes_per_class}")
    if ipc < 1:
        problems.append(f"ipc: must be at least 1, got {ipc}")
    if problems:
        raise ConfigError(problems, source="condense")
    latent = (latent_channels or channels, latent_side(height, downsample), latent_side(width, downsample))
    layout = KfsLayout(num_classes=num_classes, codes_per_class=max(1, codes_per_class), latent_shape=latent,
                       image_shape=tuple(image_shape), decoders=decoders, hidden=hidden)
    budget = budget_floats(ipc, num_classes, image_shape)
    smallest = layout.decoder_floats + num_classes * layout.floats_per_code
    if smallest > budget:
        needed_ipc = math.ceil(smallest / budget_floats(1, num_classes, image_shape))
        raise ConfigError(
            [f"ipc={ipc}: a budget of {budget} floats cannot hold {decoders} decoders of "
             f"{layout.floats_per_decoder} floats plus one {'x'.join(map(str, latent))} code per class "
             f"({smallest} floats); the smallest IPC that works is {needed_ipc}"],
            source="condense",
            hint=f"use --ipc {needed_ipc}, or fewer or smaller decoders (kfs.decoders, kfs.hidden)")
    fitting = (budget - layout.decoder_floats) // (num_classes * layout.floats_per_code)
    if codes_per_class == 0:
        return dataclasses.replace(layout, codes_per_class=int(fitting))
    if codes_per_class > fitting:
        raise ConfigError(
            [f"kfs.codes_per_class={codes_per_class}: with {decoders} decoders the budget of ipc={ipc} "
             f"({budget} floats) holds at most {fitting} codes per class"],
            source="condense", hint=f"use kfs.codes_per_class={fitting} or 0 (as many as fit)")
    return layout


@dataclasses.dataclass(frozen=True)
class StorageReport:
    """What a condensed set stores, against the budget and against the full training set."""

    budget_floats: int
    stored_floats: int
    synthetic_images: int
    images_per_class: int
    full_dataset_floats: int  # the real training images, one float per pixel

    @property
    def compression_ratio(self) -> float:
        return self.full_dataset_floats / self.stored_floats

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "compression_ratio": round(self.compression_ratio, 3)}
