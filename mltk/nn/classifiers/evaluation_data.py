"""The labelled split a stored classifier is scored on (``mltk eval REF --protocol accuracy|robust``)."""

from __future__ import annotations

from mltk.core.catalog import EvalRequest
from mltk.core.errors import UsageError
from mltk.data import DataSpec, load_split
from mltk.nn.artifacts import LoadedClassifier


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
        spec = DataSpec.stored(stored)
    return request.located(spec)


def split_for(loaded: LoadedClassifier, request: EvalRequest):
    """(spec, dataset) of ``request.split`` for ``loaded``; UsageError when its images or classes do not fit."""
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
    return spec, dataset
