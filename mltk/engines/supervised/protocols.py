"""``mltk eval REF --protocol accuracy``: top-1 accuracy of a classifier on a labelled split."""

from __future__ import annotations

import dataclasses

from mltk.core.catalog import EvalRequest, EvalResult, register_protocol
from mltk.core.console import Reporter
from mltk.core.device import resolve_device
from mltk.core.errors import UsageError
from mltk.data import DataSpec, load_split
from mltk.nn.artifacts import load_classifier
from mltk.nn.classifiers.evaluation import evaluate_classifier


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The accuracy protocol takes no options of its own."""


def data_spec_for(task: dict, request: EvalRequest, where: str) -> DataSpec:
    """The dataset to score on: ``--data`` if given, else the one the model was trained on.

    The stored spec includes the seeded hold-outs, so the test split a model
    was measured on at the end of training is rebuilt exactly.
    """
    if request.data:
        spec = DataSpec(name=request.data)
    else:
        stored = task.get("data")
        if not stored:
            raise UsageError(f"{where}: records no dataset", hint="pass --data NAME")
        known = {f.name for f in dataclasses.fields(DataSpec)}
        spec = DataSpec(**{k: v for k, v in stored.items() if k in known})
    spec = request.located(spec)
    return spec


@register_protocol("accuracy", description="top-1 accuracy and cross-entropy of a classifier on a labelled split")
def accuracy_protocol(request: EvalRequest, reporter: Reporter) -> EvalResult:
    request.parse_options(NoOptions)
    loaded = load_classifier(request.ref)
    spec = data_spec_for(loaded.task, request, loaded.source)
    dataset = load_split(spec, request.split)
    args = loaded.arch_args
    expected = (args["in_channels"], args["image_size"], args["image_size"])
    if tuple(dataset.image_shape) != expected:
        raise UsageError(f"{loaded.source} takes {'x'.join(map(str, expected))} images, {spec.name} "
                         f"has {'x'.join(map(str, dataset.image_shape))}",
                         hint="evaluate on the dataset the model was trained for")
    if dataset.num_classes > args["num_classes"]:
        raise UsageError(f"{spec.name} has {dataset.num_classes} classes, {loaded.source} "
                         f"predicts {args['num_classes']}")
    device = resolve_device(request.device)
    reporter.info(f"scoring {loaded.source} on {spec.name} {request.split} ({len(dataset)} images)")
    scores = evaluate_classifier(loaded.model.to(device), dataset, batch_size=request.batch_size,
                                 device=device)
    return EvalResult(metrics={"accuracy": scores["accuracy"], "loss": scores["loss"]}, primary="accuracy",
                      details={"model": loaded.source, "data": spec.name, "split": request.split,
                               "images": scores["count"], "test_holdout": spec.test_holdout,
                               "holdout_seed": spec.holdout_seed})
