"""The configuration search of benchmarks/condense.py scores on a validation split carved out of digits' train set."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

from mltk.core import config
from mltk.core.catalog import get_recipe, preset_path
from mltk.data import load_dataset, load_splits

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "condense.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("condense_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(images) -> Counter:
    return Counter(bytes(row) for row in images.flatten(1).numpy())


def test_design_split_is_held_out_of_the_training_images_and_never_reads_the_test_split():
    bench = _benchmark()
    cfg = config.resolve(get_recipe("condense").config_class, preset=preset_path("condense", "digits"),
                         overrides=list(bench.DESIGN_SPLIT))
    splits = load_splits(cfg.data)
    real_train = load_dataset("digits", "train")
    # The split that a design run scores on ("test" there) is 287 of the training images; the rest train.
    assert splits.test.split == "test-from-train"
    assert (len(splits.train), len(splits.test)) == (len(real_train) - 287, 287)
    assert _rows(splits.train.images) + _rows(splits.test.images) == _rows(real_train.images)
    assert Counter(splits.train.labels.tolist()) + Counter(splits.test.labels.tolist()) == Counter(
        real_train.labels.tolist())
    # Every class is represented in the validation split, so per-class accuracy is measurable.
    assert set(splits.test.labels.tolist()) == set(range(10))


def test_every_design_variant_is_a_valid_condense_configuration_on_the_pre_search_baseline():
    bench = _benchmark()
    entry = get_recipe("condense")
    resolved = {}
    for name, extra in bench.DESIGN_VARIANTS.items():
        method = extra[extra.index("--method") + 1]
        overrides = [*bench.DESIGN_BASE, f"method={method}", *(o for o in extra if "=" in o), *bench.DESIGN_SPLIT]
        resolved[name] = config.resolve(entry.config_class, preset=preset_path("condense", "digits"),
                                        overrides=overrides)
        assert resolved[name].method == method, name
    # The plain variants are the preset as it was before the search; a variant's own values win over it.
    plain = resolved["kfs"]
    assert (plain.kfs.decoders, plain.kfs.hidden, plain.optim.lr_decoders) == (4, 2, 0.001)
    assert resolved["dm"].optim.lr_images == 1.0 and resolved["dm-lr0.3"].optim.lr_images == 0.3
    chosen = resolved["kfs-8dec-h1-lrd0.01"]
    assert (chosen.kfs.decoders, chosen.kfs.hidden, chosen.optim.lr_decoders) == (8, 1, 0.01)
