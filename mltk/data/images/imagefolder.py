"""``imagefolder:PATH``: a folder or .zip of class subfolders, ``PATH/<class>/*.png``.

If the root (or, in a folder or zip whose root holds one single folder, that
folder) holds only ``train/``, ``val/`` and ``test/`` folders of class
folders, those are the splits; otherwise everything is one split, served as
whichever split is asked for (a user's own test set is usually just class
folders) and named "train": training refuses to test on it unless a test
split is held out of it (see ``load_splits``). A dataset with ``val/`` but no
``test/`` serves ``val/`` as its test split.
Class names are the class folder names, sorted, across all splits, so a
label means the same class in every split. Files below a class folder count
at any depth, as in torchvision's ImageFolder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mltk.core.errors import ArtifactError, UsageError
from mltk.data.filetree import FileTree
from mltk.data.images.dataset import ImageDataset
from mltk.data.images.decode import decode_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLIT_FOLDERS = ("train", "val", "test")


def read_imagefolder(path: Path, split: str, name: str) -> ImageDataset:
    """The ``split`` of the image folder or zip at ``path``: uint8 [N, C, H, W]."""
    with FileTree(path) as tree:
        images = [n for n in tree.names if n.lower().endswith(IMAGE_SUFFIXES)]
        if not images:
            raise ArtifactError(
                f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) found",
                "an image folder holds PATH/<class>/<image> files",
            )
        splits = find_splits(images)
        served, folder = _split_folder(splits, split, name, path)
        class_names = sorted(
            {label for prefix in splits.values() for n in images if (label := _class_of(n, prefix))}
        )
        if not class_names:
            raise ArtifactError(
                f"{path}: images found but no class folders; put them in PATH/<class>/ folders"
            )
        label_of = {label: index for index, label in enumerate(class_names)}
        members = sorted((label_of[label], n) for n in images if (label := _class_of(n, folder)))
        if not members:
            raise ArtifactError(f"{path}: the {split!r} split ({folder or '.'}) holds no images")
        pixels = decode_images([n for _, n in members], tree.read, tree.where)
    return ImageDataset(
        images=pixels,
        labels=torch.tensor([label for label, _ in members], dtype=torch.int64),
        class_names=class_names,
        name=name,
        split=served,
    )


def find_splits(images: list[str]) -> dict[str, str]:
    """Split name -> folder prefix ("" or "a/b/"), from the relative image paths."""
    prefix = ""
    while True:
        below = [n[len(prefix) :] for n in images if n.startswith(prefix)]
        children = {n.split("/", 1)[0] for n in below if "/" in n}
        loose_files = any("/" not in n for n in below)
        if (
            children
            and children <= set(SPLIT_FOLDERS)
            and all(
                any(n.startswith(f"{child}/") and n.count("/") >= 2 for n in below)
                for child in children
            )
        ):
            return {child: f"{prefix}{child}/" for child in SPLIT_FOLDERS if child in children}
        # One wrapping folder (typical of zips) whose images all sit in subfolders: descend.
        if len(children) == 1 and not loose_files and all(n.count("/") >= 2 for n in below):
            prefix += f"{children.pop()}/"
            continue
        return {"train": prefix}


def _class_of(name: str, prefix: str) -> str:
    """The class folder of image ``name`` below ``prefix``, or "" when it has none."""
    if not name.startswith(prefix):
        return ""
    rest = name[len(prefix) :]
    return rest.split("/", 1)[0] if "/" in rest else ""


def _split_folder(splits: dict[str, str], split: str, name: str, path: Path) -> tuple[str, str]:
    """(name of the split served, its folder prefix) for a request of ``split``."""
    if split in splits:
        return split, splits[split]
    if list(splits) == ["train"] and not any(f"/{s}/" in f"/{splits['train']}" for s in SPLIT_FOLDERS):
        return "train", splits["train"]  # class folders and nothing else: one split for every request
    if split == "test" and "val" in splits:
        return "val", splits["val"]
    hint = f"{path} has the split(s) {', '.join(splits)}"
    if split == "test":
        hint += (
            "; hold a test split out of train with data.test_holdout=0.1 (a fraction or a count)"
        )
    elif split == "val":
        hint += "; hold a validation split out of train with data.val_holdout=0.1"
    raise UsageError(f"{name} has no {split!r} split", hint)
