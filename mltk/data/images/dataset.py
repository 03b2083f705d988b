"""The one in-memory form every dataset takes: uint8 images and int64 labels.

Images stay uint8 (a quarter of float32's memory, and exactly what the files
hold); conversion to float and normalisation belong to the transforms that
feed a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(eq=False)
class ImageDataset:
    """A labelled image set held in memory.

    images: uint8 [N, C, H, W] with C = 1 (grayscale) or 3 (RGB).
    labels: int64 [N], each in [0, len(class_names)).
    name: the dataset name it was loaded by, e.g. "digits", "imagefolder:/x/y".
    split: "train", "test", "val", or a derived name such as "val-from-train".
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    name: str
    split: str

    def __post_init__(self) -> None:
        where = f"ImageDataset {self.name!r} split {self.split!r}"
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8:
            raise ValueError(f"{where}: images must be a uint8 tensor, got {_kind(self.images)}")
        if self.images.dim() != 4 or self.images.shape[1] not in (1, 3):
            raise ValueError(
                f"{where}: images must have shape [N, C, H, W] with C 1 or 3, "
                f"got {tuple(self.images.shape)}"
            )
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64:
            raise ValueError(f"{where}: labels must be an int64 tensor, got {_kind(self.labels)}")
        if self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise ValueError(
                f"{where}: labels must have shape [N] = [{len(self.images)}] to match the "
                f"images, got {tuple(self.labels.shape)}"
            )
        if not self.class_names or not all(isinstance(c, str) for c in self.class_names):
            raise ValueError(f"{where}: class_names must be a non-empty list of strings")
        if len(self.labels) and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)
        ):
            raise ValueError(
                f"{where}: labels span {int(self.labels.min())}..{int(self.labels.max())} but "
                f"there are {len(self.class_names)} class names"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        channels, height, width = self.images.shape[1:]
        return int(channels), int(height), int(width)

    def subset(self, indices: torch.Tensor, split: str | None = None) -> ImageDataset:
        """The images at ``indices`` (int64 [K] or a bool mask [N]), copied, in that order."""
        return ImageDataset(
            images=self.images[indices],
            labels=self.labels[indices],
            class_names=list(self.class_names),
            name=self.name,
            split=self.split if split is None else split,
        )

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"image_shape={self.image_shape}, num_classes={self.num_classes})"
        )


def _kind(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor"
    return type(value).__name__
