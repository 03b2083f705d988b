"""``mltk eval REF --protocol linear-probe | knn | finetune``: how good an encoder's features are.

* ``linear-probe``: frozen features of the train split, standardised, then a
  multinomial logistic regression (scikit-learn); accuracy on the test split.
* ``knn``: the test image's k = 20 nearest train features by cosine similarity
  vote with weight exp(similarity / 0.07) (DINO's protocol).
* ``finetune``: the whole ViT plus a linear head trained end to end with
  layer-wise learning-rate decay (see finetune_protocol.py).

REF is an encoder artifact (``mltk train mae | rc-mae | sdft``; RC-MAE's
teacher unless ``--weights student``) or any classifier artifact (its
``embed`` features). The dataset defaults to the one the artifact was trained
on, with the same held-out test split; ``--data`` scores another one, its
images fitted to the encoder's input size. Every result records its protocol
and settings under ``protocol_settings``.
"""

from __future__ import annotations

import dataclasses

import torch

from mltk.core.catalog import EvalRequest, EvalResult, register_protocol
from mltk.core.console import Reporter
from mltk.core.device import resolve_device
from mltk.core.errors import UsageError
from mltk.data import DataSpec, ImageDataset, load_splits
from mltk.data.images.fit_images import fit_dataset
from mltk.engines.mim.encoder import LoadedEncoder, load_encoder
from mltk.engines.mim.finetune_protocol import FinetuneOptions, finetune
from mltk.nn.encoders.evaluation import extract_features, knn_predict, linear_probe, subset_indices


@dataclasses.dataclass(frozen=True)
class LinearProbeOptions:
    weights: str = "default"  # default (RC-MAE: the teacher), teacher or student
    train_images: int = 0  # train images the probe is fitted on (a seeded subset); 0 = all
    c: float = 1.0  # inverse L2 regularisation strength of the logistic regression
    max_iter: int = 1000
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class KnnOptions:
    weights: str = "default"
    k: int = 20
    temperature: float = 0.07
    train_images: int = 0  # train images in the k-NN memory (a seeded subset); 0 = all
    seed: int = 0


def labelled_splits(encoder: LoadedEncoder, request: EvalRequest,
                    reporter: Reporter) -> tuple[ImageDataset, ImageDataset, DataSpec]:
    """(train, evaluation split) of the dataset to score on, fitted to the encoder's input."""
    if request.data:
        spec = DataSpec(name=request.data)
    else:
        stored = encoder.task.get("data")
        if not stored:
            raise UsageError(f"{encoder.source}: records no dataset", hint="pass --data NAME")
        spec = DataSpec.stored(stored)
    spec = request.located(spec)
    if request.split not in ("test", "val"):
        raise UsageError(f"--split {request.split}: these protocols train on the train split and score "
                         "the test or val split", hint="use --split test (or val, given data.val_holdout)")
    splits = load_splits(spec)
    evaluated = splits.test if request.split == "test" else splits.val
    if evaluated is None:
        raise UsageError(f"{spec.name} has no 'val' split here", hint="use --split test")
    train = splits.train
    target = (encoder.in_channels, encoder.image_size, encoder.image_size)
    if tuple(train.image_shape) != target:
        reporter.info(f"fitting {spec.name} images {tuple(train.image_shape)} to the encoder's input {target}")
        train = fit_dataset(train, channels=target[0], size=target[1])
        evaluated = fit_dataset(evaluated, channels=target[0], size=target[1])
    return train, evaluated, spec


def _features(encoder: LoadedEncoder, train: ImageDataset, evaluated: ImageDataset, *, limit: int, seed: int,
              request: EvalRequest, reporter: Reporter):
    device = resolve_device(request.device)
    encoder.to(device)
    chosen = subset_indices(len(train), limit, seed)
    reporter.info(f"features of {encoder.source} ({encoder.weights} weights): {len(chosen)} train and "
                  f"{len(evaluated)} {request.split} images")
    with torch.no_grad():
        train_features = extract_features(encoder.features, train.images[chosen], batch_size=request.batch_size,
                                          device=device)
        test_features = extract_features(encoder.features, evaluated.images, batch_size=request.batch_size,
                                         device=device)
    return train_features, train.labels[chosen], test_features


def _details(encoder: LoadedEncoder, spec: DataSpec, request: EvalRequest, settings: dict, **extra) -> dict:
    return {"model": encoder.source, "weights": encoder.weights, "data": spec.name, "split": request.split,
            "test_holdout": spec.test_holdout, "holdout_seed": spec.holdout_seed,
            "protocol_settings": settings, **extra}


@register_protocol("linear-probe", description="logistic regression on frozen, standardised encoder features")
def linear_probe_protocol(request: EvalRequest, reporter: Reporter) -> EvalResult:
    options = request.parse_options(LinearProbeOptions)
    if options.c <= 0 or options.max_iter < 1:
        raise UsageError(f"--c must be positive and --max-iter at least 1, got {options.c} and {options.max_iter}")
    encoder = load_encoder(request.ref, weights=options.weights)
    train, evaluated, spec = labelled_splits(encoder, request, reporter)
    train_f, train_y, test_f = _features(encoder, train, evaluated, limit=options.train_images, seed=options.seed,
                                         request=request, reporter=reporter)
    scores = linear_probe(train_f, train_y, test_f, evaluated.labels, c=options.c, max_iter=options.max_iter)
    settings = {"name": "linear-probe", "features": "frozen, standardised (train mean/std)",
                "classifier": "multinomial logistic regression, L-BFGS (scikit-learn)",
                **dataclasses.asdict(options)}
    return EvalResult(metrics={"accuracy": scores["accuracy"], "train_accuracy": scores["train_accuracy"]},
                      primary="accuracy",
                      details=_details(encoder, spec, request, settings, train_images=len(train_y),
                                       images=len(evaluated), feature_dim=int(train_f.shape[1]),
                                       iterations=scores["iterations"]))


@register_protocol("knn", description="weighted k-NN (k=20, cosine, temperature 0.07) on frozen encoder features")
def knn_protocol(request: EvalRequest, reporter: Reporter) -> EvalResult:
    options = request.parse_options(KnnOptions)
    if options.k < 1 or options.temperature <= 0:
        raise UsageError(f"--k must be at least 1 and --temperature positive, got {options.k} and "
                         f"{options.temperature}")
    encoder = load_encoder(request.ref, weights=options.weights)
    train, evaluated, spec = labelled_splits(encoder, request, reporter)
    train_f, train_y, test_f = _features(encoder, train, evaluated, limit=options.train_images, seed=options.seed,
                                         request=request, reporter=reporter)
    predicted = knn_predict(train_f, train_y, test_f, num_classes=train.num_classes, k=options.k,
                            temperature=options.temperature)
    settings = {"name": "knn", "similarity": "cosine", "vote": "exp(similarity / temperature)",
                **dataclasses.asdict(options)}
    accuracy = float((predicted == evaluated.labels).double().mean())
    return EvalResult(metrics={"accuracy": accuracy}, primary="accuracy",
                      details=_details(encoder, spec, request, settings, train_images=len(train_y),
                                       images=len(evaluated), feature_dim=int(train_f.shape[1])))


@register_protocol("finetune", description="fine-tune the whole ViT encoder + a linear head, layer-wise lr decay")
def finetune_protocol(request: EvalRequest, reporter: Reporter) -> EvalResult:
    options = request.parse_options(FinetuneOptions)
    encoder = load_encoder(request.ref, weights=options.weights)
    if encoder.mae is None:
        raise UsageError(f"{encoder.source}: is a classifier; finetune takes an encoder artifact "
                         "(mltk train mae / rc-mae / sdft)", hint="score a classifier with --protocol accuracy")
    train, evaluated, spec = labelled_splits(encoder, request, reporter)
    result = finetune(encoder, train, evaluated, options=options, device=resolve_device(request.device),
                      eval_batch_size=request.batch_size, reporter=reporter, data_spec=spec)
    settings = {"name": "finetune", **dataclasses.asdict(options)}
    return EvalResult(metrics=result.metrics, primary="accuracy",
                      details=_details(encoder, spec, request, settings, images=len(evaluated),
                                       train_images=result.train_images, saved=result.saved))
