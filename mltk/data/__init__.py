"""Datasets by name, read from their official files into memory as uint8 tensors.

from mltk.data import load_dataset, load_splits, DataSpec
train = load_dataset("cifar10", "train", data_dir="~/data")
splits = load_splits(DataSpec(name="digits", val_holdout=0.1))
"""

from mltk.data.datasets import (
    DatasetInfo,
    dataset_info,
    dataset_names,
    describe_datasets,
    load_dataset,
)
from mltk.data.images.dataset import ImageDataset
from mltk.data.splits import DataSpec, DataSplits, holdout, load_split, load_splits

__all__ = [
    "DataSpec",
    "DataSplits",
    "DatasetInfo",
    "ImageDataset",
    "dataset_info",
    "dataset_names",
    "describe_datasets",
    "holdout",
    "load_dataset",
    "load_split",
    "load_splits",
]
