"""Run the reference DM (VICO-UoE/DatasetCondensation, main_DM.py) offline, on our data, to time it.

The reference is not part of mltk (and none of its code is here): fetch it
outside the repository, then point this script at it::

    python benchmarks/condense_reference_dm.py REPO_DIR /tmp/cifar10_train.npz --ipc 10 --iterations 20

Three shims, nothing else changed:

* ``get_dataset`` (its data loader downloads with torchvision) returns our
  CIFAR-10: the train split of ``npz`` minus the same 5,000 held-out images
  mltk holds out (``data.test_holdout=5000``, seed 0), normalised with the
  reference's own CIFAR-10 mean and std, as a ``utils.TensorDataset``;
* ``get_time`` returns ``time.perf_counter()`` so the log's timestamps (one
  line every 10 iterations) give iterations per second;
* the torch installed here (2.x) refuses the reference's Siamese DSA
  statements ``x[:] = x[0]`` (the value is a view of the target), which
  torch 1.x, the reference's, accepted; ``Tensor.__setitem__`` clones such a
  value first, which gives what torch 1.x computed.

Evaluation is switched off with the reference's own flag (``--num_eval 0``),
so the run is pure condensation. Prints one JSON line: iterations per second
between the first and the last logged iteration.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import tempfile
import time
from pathlib import Path

REFERENCE_MEAN = [0.4914, 0.4822, 0.4465]  # the reference's CIFAR10 normalisation (utils.get_dataset)
REFERENCE_STD = [0.2023, 0.1994, 0.2010]


def our_cifar10(npz: Path, test_holdout: int = 5000):
    import torch

    from mltk.data import DataSpec, load_splits

    splits = load_splits(DataSpec(name=f"npz:{npz}", test_holdout=test_holdout))

    def normalised(dataset):
        images = dataset.images.float() / 255
        mean = torch.tensor(REFERENCE_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(REFERENCE_STD).view(1, 3, 1, 1)
        return (images - mean) / std, dataset.labels

    return splits, normalised


def allow_self_overlapping_assignment() -> None:
    """``x[:] = x[0]`` as torch 1.x ran it: clone a value that shares the target's memory first."""
    import torch

    original = torch.Tensor.__setitem__

    def setitem(self, index, value):
        if isinstance(value, torch.Tensor) and value.untyped_storage().data_ptr() == self.untyped_storage().data_ptr():
            value = value.clone()
        return original(self, index, value)

    torch.Tensor.__setitem__ = setitem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reference", type=Path, help="checkout of VICO-UoE/DatasetCondensation")
    parser.add_argument("npz", type=Path, help="CIFAR-10 train images as npz (benchmarks/condense_cache_cifar10.py)")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--batch-real", type=int, default=256)
    args = parser.parse_args()

    import torch

    splits, normalised = our_cifar10(args.npz)
    sys.path.insert(0, str(args.reference))
    import main_DM
    import utils

    def get_dataset(dataset, data_path):
        train_images, train_labels = normalised(splits.train)
        test_images, test_labels = normalised(splits.test)
        dst_train = utils.TensorDataset(train_images, train_labels)
        dst_test = utils.TensorDataset(test_images, test_labels)
        testloader = torch.utils.data.DataLoader(dst_test, batch_size=256, shuffle=False, num_workers=0)
        return (3, (32, 32), 10, list(splits.train.class_names), REFERENCE_MEAN, REFERENCE_STD, dst_train,
                dst_test, testloader)

    allow_self_overlapping_assignment()
    main_DM.get_dataset = get_dataset
    main_DM.get_time = lambda: f"{time.perf_counter():.4f}"
    with tempfile.TemporaryDirectory() as scratch:
        sys.argv = ["main_DM.py", "--dataset", "CIFAR10", "--model", "ConvNet", "--ipc", str(args.ipc),
                    "--Iteration", str(args.iterations), "--batch_real", str(args.batch_real), "--num_exp", "1",
                    "--num_eval", "0", "--init", "real", "--dsa_strategy", "color_crop_cutout_flip_scale_rotate",
                    "--data_path", scratch, "--save_path", scratch]
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            main_DM.main()
    stamps = [(int(it), float(t)) for t, it in re.findall(r"^(\d+\.\d+) iter = (\d+)", log.getvalue(), re.M)]
    (first_it, first_t), (last_it, last_t) = stamps[0], stamps[-1]
    print(json.dumps({"implementation": "reference main_DM.py", "ipc": args.ipc, "batch_real": args.batch_real,
                      "iterations_timed": last_it - first_it,
                      "iterations_per_s": (last_it - first_it) / (last_t - first_t),
                      "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
