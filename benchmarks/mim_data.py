"""Data caches for benchmarks/mim.py, written under /tmp (never into the repository).

* CIFAR-10: the 50,000 train JPEGs of ../shared/data/cifar10/cifar10_train_jpg.zip, decoded once
  (about 8 s) into an .npz in the same image order, so ``data.test_holdout=5000`` holds out exactly
  the images it would hold out of the zip.
* MNIST target for self-distillation: the 10,000 official test images of ../shared/data/mnist_test
  (the train file is not staged), split by a seeded permutation into a small train set and a test set.

    python benchmarks/mim_data.py            # prints the two paths
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mltk.data import load_dataset
from mltk.data.images.idx import MNIST_CLASSES, read_idx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CACHE = Path("/tmp/mltk-mim")
CIFAR_ZIP = SHARED / "cifar10" / "cifar10_train_jpg.zip"
MNIST_DIR = SHARED / "mnist_test"
MNIST_TRAIN, MNIST_TEST = 2000, 2000


def cifar10_npz() -> Path:
    path = CACHE / "cifar10.npz"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        train = load_dataset(f"imagefolder:{CIFAR_ZIP}", "train")
        np.savez(path, images=train.images.numpy(), labels=train.labels.numpy(),
                 class_names=np.array(train.class_names, dtype=str))
    return path


def mnist_npz() -> Path:
    path = CACHE / "mnist-small.npz"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        images = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
        labels = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).numpy()
        train, test = order[:MNIST_TRAIN], order[MNIST_TRAIN:MNIST_TRAIN + MNIST_TEST]
        np.savez(path, x_train=images[train], y_train=labels[train], x_test=images[test], y_test=labels[test],
                 class_names=np.array(MNIST_CLASSES, dtype=str))
    return path


if __name__ == "__main__":
    print(cifar10_npz())
    print(mnist_npz())
