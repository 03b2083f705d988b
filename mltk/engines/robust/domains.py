"""Image domains for few-shot tasks, each read from its real files as a pool of classes.

A domain is a name: ``digits`` (scikit-learn's 8x8 digits, built in),
``omniglot`` (the background alphabets' zips; a class is one character of one
alphabet), ``mnist`` (the IDX test files), ``usps`` (``usps.h5``, needs h5py),
``dtd`` (texture class folders), ``cifar10`` (the JPEG zip of class folders),
or ``imagefolder:PATH`` (a folder of class folders). Files are looked for
under the data dir (``data_dir`` > ``$MLTK_DATA``) in the layout of the
shared data folder and the usual one (``omniglot/``, ``mnist/``, ...).

Unlike mltk's dataset readers, few-shot domains are resized (antialiased) to
the encoder's input size and converted to its channel count on purpose: an
unseen domain never has the meta-training domain's image size. Omniglot's
black strokes on white are inverted to white on black, as MNIST draws them.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mltk.core.errors import DataMissingError, UsageError
from mltk.data.locate import resolve_data_dir

DOMAINS = ("digits", "omniglot", "mnist", "usps", "dtd", "cifar10", "imagefolder:PATH")
# Where each domain's files may lie, relative to the data dir: the shared folder's layout first.
_PLACES = {
    "omniglot": [("fewshot/omniglot/python/images_background_small1.zip",
                  "fewshot/omniglot/python/images_background_small2.zip"),
                 ("omniglot/images_background_small1.zip", "omniglot/images_background_small2.zip"),
                 ("omniglot/images_background.zip",)],
    "mnist": [("mnist_test/t10k-images-idx3-ubyte.gz", "mnist_test/t10k-labels-idx1-ubyte.gz"),
              ("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz")],
    "usps": [("fewshot/usps/data/usps.h5",), ("usps/usps.h5",)],
    "dtd": [("fewshot/dtd_subset/images",), ("dtd/images",)],
    "cifar10": [("cifar10/cifar10_train_jpg.zip",)],
}


@dataclasses.dataclass
class ClassPool:
    """A domain's images grouped by class: images float [N, C, S, S] in [0, 1], ``members[c]`` the rows of
    class ``names[c]`` (int64 [n_c])."""

    images: torch.Tensor
    members: list[torch.Tensor]
    names: list[str]
    domain: str

    def classes(self, indices: list[int]) -> ClassPool:
        return ClassPool(self.images, [self.members[i] for i in indices], [self.names[i] for i in indices],
                         self.domain)


def load_domain(name: str, *, image_size: int, channels: int, data_dir: str | None = None,
                max_per_class: int = 0) -> ClassPool:
    """The classes of domain ``name`` at ``image_size`` pixels and ``channels`` channels."""
    kind = name.split(":", 1)[0]
    if kind == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        groups = _group(np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None], digits.target,
                        [str(d) for d in range(10)])
    elif kind == "imagefolder":
        path = Path(name.split(":", 1)[1]).expanduser() if ":" in name else None
        if path is None or not path.is_dir():
            raise DataMissingError(f"{name}: no such folder", hint="imagefolder:PATH names a folder of class folders")
        groups = _read_class_folders(path, image_size, max_per_class)
    elif kind in _PLACES:
        files = _locate(kind, data_dir)
        groups = _READERS[kind](files, image_size, max_per_class)
    else:
        raise UsageError(f"unknown few-shot domain {name!r}", hint=f"domains: {', '.join(DOMAINS)}")
    names = sorted(groups)
    tensors, members, start = [], [], 0
    for class_name in names:
        images = groups[class_name]
        if max_per_class:
            images = images[:max_per_class]
        tensors.append(_fit(torch.from_numpy(np.ascontiguousarray(images)), image_size, channels))
        members.append(torch.arange(start, start + len(images)))
        start += len(images)
    return ClassPool(torch.cat(tensors), members, names, name)


def _fit(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """uint8 [n, c, h, w] -> float [n, channels, size, size] in [0, 1]."""
    x = images.float().div(255)
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True) if channels == 1 else x.expand(-1, channels, -1, -1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1).contiguous()


def _group(images: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    return {names[c]: images[labels == c] for c in range(len(names)) if (labels == c).any()}


def _locate(kind: str, data_dir: str | None) -> list[Path]:
    root = resolve_data_dir(data_dir)
    for alternative in _PLACES[kind]:
        paths = [root / p for p in alternative]
        if all(p.exists() for p in paths):
            return paths
    wanted = " or ".join(", ".join(alt) for alt in _PLACES[kind])
    raise DataMissingError(f"few-shot domain {kind!r}: its files are not under {root}",
                           hint=f"put {wanted} there, or pass data_dir (e.g. the shared data folder)")


def _decode(raw: bytes, size: int) -> np.ndarray:
    """An encoded image -> uint8 [C, size, size] (center square crop, antialiased resize); RGB or gray."""
    from PIL import Image

    image = Image.open(io.BytesIO(raw))
    image = image.convert("RGB" if image.mode not in ("1", "L", "LA", "I", "I;16") else "L")
    side = min(image.size)
    left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR, reducing_gap=None)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _read_omniglot(files: list[Path], size: int, max_per_class: int) -> dict[str, np.ndarray]:
    groups: dict[str, list[np.ndarray]] = {}
    seen: set[str] = set()  # Greek and Latin are in both small zips: each drawing counts once
    for path in files:
        with zipfile.ZipFile(path) as archive:
            for entry in sorted(archive.namelist()):
                parts = entry.split("/")
                if not entry.endswith(".png") or len(parts) < 4:
                    continue
                key = f"{parts[-3]}/{parts[-2]}"
                if f"{key}/{parts[-1]}" in seen:
                    continue
                seen.add(f"{key}/{parts[-1]}")
                if key in groups and len(groups[key]) >= (max_per_class or 10**9):
                    continue
                # 1-bit black strokes on white: inverted, so that strokes are bright as in MNIST and USPS.
                groups.setdefault(key, []).append(255 - _decode(archive.read(entry), size))
    return {key: np.stack(images) for key, images in groups.items()}


def _read_mnist(files: list[Path], size: int, max_per_class: int) -> dict[str, np.ndarray]:
    from mltk.data.images.idx import read_idx

    images, labels = read_idx(files[0]), read_idx(files[1])
    return _group(images[:, None], labels, [str(d) for d in range(10)])


def _read_usps(files: list[Path], size: int, max_per_class: int) -> dict[str, np.ndarray]:
    try:
        import h5py
    except ImportError:
        raise UsageError("the usps domain needs h5py", hint="pip install 'mltk[robust]' (it brings h5py)") from None
    with h5py.File(files[0], "r") as handle:
        data = np.concatenate([handle["train/data"][:], handle["test/data"][:]])
        labels = np.concatenate([handle["train/target"][:], handle["test/target"][:]]).astype(np.int64)
    images = np.round(np.clip(data, 0, 1) * 255).astype(np.uint8).reshape(-1, 1, 16, 16)
    return _group(images, labels, [str(d) for d in range(10)])


def _read_class_folders(root: Path, size: int, max_per_class: int) -> dict[str, np.ndarray]:
    groups = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
        if max_per_class:
            paths = paths[:max_per_class]
        if paths:
            groups[folder.name] = np.stack([_decode(p.read_bytes(), size) for p in paths])
    if not groups:
        raise DataMissingError(f"{root}: no class folders with images", hint="expected ROOT/<class>/<image>")
    return groups


def _read_dtd(files: list[Path], size: int, max_per_class: int) -> dict[str, np.ndarray]:
    return _read_class_folders(files[0], size, max_per_class)


def _read_cifar10(files: list[Path], size: int, max_per_class: int) -> dict[str, np.ndarray]:
    groups: dict[str, list[np.ndarray]] = {}
    limit = max_per_class or 10**9
    with zipfile.ZipFile(files[0]) as archive:
        for entry in sorted(archive.namelist()):
            parts = entry.split("/")
            if not entry.endswith(".jpg") or len(parts) != 3:
                continue
            if len(groups.setdefault(parts[1], [])) < limit:
                groups[parts[1]].append(_decode(archive.read(entry), size))
    return {key: np.stack(images) for key, images in groups.items()}


_READERS = {"omniglot": _read_omniglot, "mnist": _read_mnist, "usps": _read_usps, "dtd": _read_dtd,
            "cifar10": _read_cifar10}
