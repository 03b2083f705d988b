"""Train / validation / test splits from a config section, the same every time.

A model's card stores its ``DataSpec``; ``load_splits`` on that spec later
rebuilds exactly the test split the model was scored on, so held-out splits
come from a seeded permutation and never from global random state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from mltk.core.errors import ConfigError, UsageError
from mltk.data.datasets import load_dataset
from mltk.data.images.dataset import ImageDataset


@dataclass(frozen=True)
class DataSpec:
    """The ``data`` config section, e.g. ``data.name=cifar10 data.test_holdout=5000``.

    val_holdout / test_holdout: 0 = none; a fraction in (0, 1) or a whole
    count >= 1 of the train images. test_holdout > 0 replaces the dataset's
    own test split with images held out of train (for datasets that lack
    one); the validation split is then held out of what remains.
    """

    name: str = "digits"
    data_dir: str | None = None
    download: bool = False
    val_holdout: float = 0.0
    test_holdout: float = 0.0
    holdout_seed: int = 0

    @classmethod
    def stored(cls, values: dict) -> DataSpec:
        """The spec an artifact's card recorded (its ``task.data``); keys this version does not know are ignored."""
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


@dataclass
class DataSplits:
    train: ImageDataset
    val: ImageDataset | None
    test: ImageDataset


def load_splits(spec: DataSpec) -> DataSplits:
    """Load ``spec.name``: test first (own or held out of train), then val out of the rest."""
    problems = [
        problem
        for key, amount in (
            ("data.test_holdout", spec.test_holdout),
            ("data.val_holdout", spec.val_holdout),
        )
        if (problem := _amount_problem(key, amount)) is not None
    ]
    if problems:
        raise ConfigError(problems, source="data", hint=_AMOUNT_HINT)

    def load(split: str) -> ImageDataset:
        return load_dataset(spec.name, split, data_dir=spec.data_dir, download=spec.download)

    if spec.test_holdout:
        train, test = holdout(
            load("train"),
            spec.test_holdout,
            spec.holdout_seed,
            "test-from-train",
            config_key="data.test_holdout",
        )
    else:
        train, test = load("train"), load("test")
        if test.split == "train":  # a dataset of one split serves it for every request
            raise UsageError(f"{spec.name} has no test split of its own: it would test on its training images",
                             hint="hold a test split out with data.test_holdout=0.1 (a fraction or a count)")
    val = None
    if spec.val_holdout:
        train, val = holdout(
            train,
            spec.val_holdout,
            spec.holdout_seed,
            "val-from-train",
            config_key="data.val_holdout",
        )
    return DataSplits(train=train, val=val, test=test)


def load_split(spec: DataSpec, split: str) -> ImageDataset:
    """One split as ``spec`` defines it: through ``load_splits`` when it has hold-outs, else read alone.

    Without hold-outs only the asked split is read, so scoring on a folder of
    test images needs no training images.
    """
    if spec.test_holdout or spec.val_holdout:
        splits = load_splits(spec)
        dataset = {"train": splits.train, "val": splits.val, "test": splits.test}.get(split)
        if dataset is None:
            raise UsageError(f"{spec.name} has no {split!r} split here",
                             hint="ask for the test or train split (mltk eval: --split), or give "
                                  "data.val_holdout when training")
        return dataset
    return load_dataset(spec.name, split, data_dir=spec.data_dir, download=spec.download)


def holdout(
    dataset: ImageDataset,
    amount: float,
    seed: int,
    split: str,
    *,
    config_key: str = "holdout",
) -> tuple[ImageDataset, ImageDataset]:
    """Split ``dataset`` into (rest, held), held being ``amount`` of it, named ``split``.

    amount: a fraction in (0, 1) (rounded to a count) or a whole count >= 1.
    The held images are the first of ``torch.randperm`` under a generator
    seeded with ``seed``, so the same dataset, amount and seed give the same
    split on every run; both parts keep the original order, so the held part
    of a dataset stored class by class (an image folder or zip) is itself in
    class order: score a seeded subset of it, never its first N images. Bad
    amounts raise ConfigError naming ``config_key``.
    """
    total = len(dataset)
    problem = _amount_problem(config_key, amount) or (
        f"{config_key}=0 holds nothing out" if amount == 0 else None
    )
    if problem is None:
        count = round(amount * total) if amount < 1 else int(amount)
        if count == 0:
            problem = f"{config_key}={amount} of {total} images rounds to 0 images"
        elif count >= total:
            problem = f"{config_key}={amount} holds out {count} of {total} images, leaving none"
    if problem is not None:
        raise ConfigError([problem], source="data", hint=_AMOUNT_HINT)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    held, rest = order[:count].sort().values, order[count:].sort().values
    return dataset.subset(rest), dataset.subset(held, split=split)


_AMOUNT_HINT = "use 0 for none, a fraction such as 0.1, or a whole count such as 5000"


def _amount_problem(key: str, amount: float) -> str | None:
    if (
        isinstance(amount, bool)
        or not isinstance(amount, (int, float))
        or not math.isfinite(amount)
    ):
        return f"{key}={amount!r} is not a number"
    if amount < 0:
        return f"{key}={amount} is negative"
    if amount >= 1 and amount != int(amount):
        return f"{key}={amount} is neither a fraction below 1 nor a whole count"
    return None
