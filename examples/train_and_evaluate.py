"""Train, store, reload and score a classifier from Python, with no command line.

    python examples/train_and_evaluate.py

The same layers the `mltk` command uses: a typed config resolved from a preset
plus overrides, the supervised recipe run into the registry, and the stored
artifact rebuilt from its card (no pickles) and scored on the same test split.
"""

from __future__ import annotations

import dataclasses

from mltk.core import config
from mltk.core.catalog import get_recipe, preset_path
from mltk.core.console import Reporter
from mltk.core.paths import runs_root
from mltk.core.registry import Registry
from mltk.core.run_recipe import run_recipe
from mltk.data import DataSpec, load_splits
from mltk.nn.artifacts import load_classifier
from mltk.nn.classifiers.evaluation import evaluate_classifier


def main() -> None:
    entry = get_recipe("supervised")
    cfg = config.resolve(entry.config_class, preset=preset_path("supervised", "digits"),
                         overrides=["train.epochs=5", "name=example-digits"])
    registry = Registry()
    results = run_recipe(entry, cfg, resume=None, runs_root=runs_root(), registry=registry,
                         reporter=Reporter("human"))
    print(f"trained {results['artifact']}: test accuracy {results['metrics']['test_accuracy']:.4f}")

    loaded = load_classifier(results["artifact"], registry)
    spec = DataSpec(**loaded.task["data"])  # the data spec stored with the model
    test = load_splits(spec).test
    scores = evaluate_classifier(loaded.model, test, batch_size=256, device=next(loaded.model.parameters()).device)
    print(f"reloaded {loaded.source} ({loaded.model.arch}, {dataclasses.asdict(spec)['name']}): "
          f"accuracy {scores['accuracy']:.4f} on {scores['count']} test images")
    assert scores["accuracy"] == results["metrics"]["test_accuracy"]


if __name__ == "__main__":
    main()
