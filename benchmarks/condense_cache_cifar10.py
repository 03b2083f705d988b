"""Decode the CIFAR-10 JPEG zip once into an npz under /tmp (never in the repository), for repeated benchmarks.

    python benchmarks/condense_cache_cifar10.py /work/shared/data/cifar10/cifar10_train_jpg.zip /tmp/cifar10_train.npz

The npz keeps the zip's image order, so ``npz:OUT`` with ``data.test_holdout=5000``
holds out exactly the images ``imagefolder:ZIP`` with the same setting does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mltk.data import load_dataset


def main() -> None:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    dataset = load_dataset(f"imagefolder:{source}", "train")
    np.savez(target, images=dataset.images.numpy(), labels=dataset.labels.numpy(),
             class_names=np.array(dataset.class_names, dtype=str))
    print(f"{target}: {len(dataset)} images of {dataset.image_shape}, classes {dataset.class_names}")


if __name__ == "__main__":
    main()
