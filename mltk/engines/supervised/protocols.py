"""``mltk eval REF --protocol accuracy``: top-1 accuracy of a classifier on a labelled split."""

from __future__ import annotations

import dataclasses

from mltk.core.catalog import EvalRequest, EvalResult, register_protocol
from mltk.core.console import Reporter
from mltk.core.device import resolve_device
from mltk.nn.artifacts import load_classifier
from mltk.nn.classifiers.evaluation import evaluate_classifier
from mltk.nn.classifiers.evaluation_data import split_for


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The accuracy protocol takes no options of its own."""


@register_protocol("accuracy", description="top-1 accuracy and cross-entropy of a classifier on a labelled split")
def accuracy_protocol(request: EvalRequest, reporter: Reporter) -> EvalResult:
    request.parse_options(NoOptions)
    loaded = load_classifier(request.ref)
    spec, dataset = split_for(loaded, request)
    device = resolve_device(request.device)
    reporter.info(f"scoring {loaded.source} on {spec.name} {request.split} ({len(dataset)} images)")
    scores = evaluate_classifier(loaded.model.to(device), dataset, batch_size=request.batch_size,
                                 device=device)
    return EvalResult(metrics={"accuracy": scores["accuracy"], "loss": scores["loss"]}, primary="accuracy",
                      details={"model": loaded.source, "data": spec.name, "split": request.split,
                               "images": scores["count"], "test_holdout": spec.test_holdout,
                               "holdout_seed": spec.holdout_seed})
