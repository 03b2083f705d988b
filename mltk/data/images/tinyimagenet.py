"""Tiny ImageNet (200 classes, 64x64) in its official layout, as a folder or its zip.

``tiny-imagenet-200/`` holds ``wnids.txt`` (the 200 class ids, in label
order), ``words.txt`` (id -> comma-separated synonyms; the first names the
class), ``train/<wnid>/images/*.JPEG`` (500 per class) and
``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``. The official
test images carry no labels, so the "test" split is the val split. Some
JPEGs are grayscale; every image is returned as RGB.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mltk.core.errors import ArtifactError
from mltk.data.filetree import FileTree
from mltk.data.images.dataset import ImageDataset
from mltk.data.images.decode import decode_images

ROOT = "tiny-imagenet-200"
ZIP_NAME = f"{ROOT}.zip"
SPLITS = ("train", "val")


def read_tinyimagenet_split(path: Path, split: str) -> ImageDataset:
    """``path`` is the ``tiny-imagenet-200`` folder or zip; returns uint8 [N, 3, 64, 64]."""
    with FileTree(path) as tree:
        prefix = _root_prefix(tree)
        wnids = _lines(tree, prefix + "wnids.txt")
        words = dict(
            line.split("\t", 1) for line in _lines(tree, prefix + "words.txt") if "\t" in line
        )
        class_names = [words.get(wnid, wnid).split(",")[0].strip() for wnid in wnids]
        label_of = {wnid: index for index, wnid in enumerate(wnids)}
        if split == "train":
            members = _train_members(tree, prefix, label_of)
        else:
            members = _val_members(tree, prefix, label_of)
        if not members:
            raise ArtifactError(f"{path}: no {split} images under {prefix}{split}/")
        pixels = decode_images([n for n, _ in members], tree.read, tree.where, force_rgb=True)
    return ImageDataset(
        images=pixels,
        labels=torch.tensor([label for _, label in members], dtype=torch.int64),
        class_names=class_names,
        name="tinyimagenet",
        split=split,
    )


def _root_prefix(tree: FileTree) -> str:
    # The zip wraps everything in tiny-imagenet-200/; the folder is that root itself.
    for prefix in ("", f"{ROOT}/"):
        if tree.has(f"{prefix}wnids.txt"):
            return prefix
    raise ArtifactError(
        f"{tree.root}: no wnids.txt at its root or under {ROOT}/; not the official Tiny ImageNet layout"
    )


def _lines(tree: FileTree, name: str) -> list[str]:
    if not tree.has(name):
        raise ArtifactError(f"{tree.where(name)}: missing; not the official Tiny ImageNet layout")
    text = tree.read(name).decode("utf-8", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _train_members(tree: FileTree, prefix: str, label_of: dict[str, int]) -> list[tuple[str, int]]:
    """(file, label) for train/<wnid>/images/*.JPEG, by label then file name."""
    members = []
    for name in tree.names:
        parts = name[len(prefix) :].split("/")
        if (
            name.startswith(prefix)
            and len(parts) == 4
            and parts[0] == "train"
            and parts[2] == "images"
            and parts[3].upper().endswith(".JPEG")
        ):
            if parts[1] not in label_of:
                raise ArtifactError(f"{tree.where(name)}: class {parts[1]} is not in wnids.txt")
            members.append((name, label_of[parts[1]]))
    return sorted(members, key=lambda member: (member[1], member[0]))


def _val_members(tree: FileTree, prefix: str, label_of: dict[str, int]) -> list[tuple[str, int]]:
    """(file, label) in the order of val/val_annotations.txt (file<TAB>wnid<TAB>box)."""
    members = []
    annotations = f"{prefix}val/val_annotations.txt"
    for line in _lines(tree, annotations):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of:
            raise ArtifactError(f"{tree.where(annotations)}: bad line {line!r}")
        image = f"{prefix}val/images/{fields[0]}"
        if not tree.has(image):
            raise ArtifactError(f"{tree.where(image)}: listed in val_annotations.txt but missing")
        members.append((image, label_of[fields[1]]))
    return members
