"""``mltk eval REF --protocol mbc`` and ``--protocol calibration`` for set models.

mbc: the largest |full - streamed| of the outputs over ``partitions`` random partitions and orders of
``sets`` probe sets (chunks of one element among them; ``--dtype float64`` for the 1e-12 check), the
task's score (accuracy and ECE of held-out clouds, or NLL of held-out mixture sets), and the peak tensor
memory of encoding one set of ``set_size`` elements streamed in each of ``chunk_sizes``.

calibration (point clouds): accuracy, NLL and ECE of held-out clouds, clean and under Gaussian jitter of
``corruption``, without and with Monte-Carlo set-element dropout at ``dropout`` (``mc_samples`` draws).

The held-out data is rebuilt from the card (the same split as at the end of training) unless ``--data``
names another source.
"""

from __future__ import annotations

import dataclasses

import torch

from mltk.core.catalog import EvalRequest, EvalResult, register_protocol
from mltk.core.console import Reporter
from mltk.core.errors import UsageError
from mltk.core.seeding import generator as seeded_generator
from mltk.engines.sets.artifact import LoadedSetModel, load_set_model
from mltk.engines.sets.data import load_point_clouds
from mltk.engines.sets.evaluation import (
    class_probabilities,
    classification_scores,
    consistency_gap,
    corrupt,
    mixture_scores,
    peak_tensor_bytes,
)
from mltk.engines.sets.inputs import chunks_of


@dataclasses.dataclass(frozen=True)
class MbcOptions:
    partitions: int = 100
    sets: int = 4  # probe sets
    set_size: int = 1000  # elements per probe set (and of the memory measurement)
    chunk_sizes: tuple[int, ...] = (1, 10, 100, 1000)
    dtype: str = "float32"  # float32 | float64
    eval_chunk: int = 100  # chunk size of the task scores


@dataclasses.dataclass(frozen=True)
class CalibrationOptions:
    corruption: float = 0.3
    dropout: float = 0.2  # MC set-element dropout rate (default: the training rate when it was positive)
    mc_samples: int = 10
    bins: int = 10
    eval_chunk: int = 100


def _held_out_clouds(loaded: LoadedSetModel, request: EvalRequest):
    data = loaded.card.get("config", {}).get("data", {})
    name = request.data or data.get("name")
    clouds = load_point_clouds(name, points=int(data.get("points", 1024)),
                               test_fraction=float(data.get("test_fraction", 0.25)),
                               seed=int(loaded.card.get("config", {}).get("seed", 0)))
    if len(clouds.test_labels) == 0:
        raise UsageError(f"{name}: no held-out cloud", hint="pass --data with a source that has a test split")
    return clouds, name


@register_protocol("mbc", description="mini-batch consistency |full - streamed|, task score and memory per chunk "
                                      "size of a set model (UMBC)")
def mbc_protocol(request: EvalRequest, reporter: Reporter) -> EvalResult:
    options = request.parse_options(MbcOptions)
    if options.dtype not in ("float32", "float64"):
        raise UsageError(f"--dtype {options.dtype}: use float32 or float64")
    if any(c < 1 for c in options.chunk_sizes):
        raise UsageError(f"--chunk-sizes {list(options.chunk_sizes)}: every chunk size must be at least 1")
    loaded = load_set_model(request.ref)
    model = loaded.model.to(getattr(torch, options.dtype))
    spec, task = model.spec, loaded.task
    g = seeded_generator(0, 0x3BC)
    probe = torch.randn(options.sets, options.set_size, spec.dim_in, generator=g, dtype=model.output.weight.dtype)
    metrics: dict = {}
    details: dict = {"model": loaded.source, "kind": spec.kind, "dtype": options.dtype,
                     "partitions": options.partitions, "probe": f"{options.sets} sets of {options.set_size} N(0, 1) "
                                                                f"elements"}
    metrics["max_abs_diff"] = consistency_gap(model, probe, partitions=options.partitions, generator=g)
    reporter.info(f"{loaded.source}: max |full - streamed| {metrics['max_abs_diff']:.3g} over "
                  f"{options.partitions} partitions")
    if task.get("type") == "classify":
        clouds, where = _held_out_clouds(loaded, request)
        probs = class_probabilities(model, clouds.test_points.to(probe.dtype), chunk_size=options.eval_chunk)
        metrics.update(classification_scores(probs, clouds.test_labels, bins=10))
        details["data"] = f"{where} (held out, {len(clouds.test_labels)} clouds)"
    elif task.get("type") == "mixture":
        metrics.update(mixture_scores(model, sizes=(8, 64, 512, 1024), sets=32, components=task["components"],
                                      dims=task["dims"], chunk_size=options.eval_chunk, seed=0))
    memory = {}
    one = probe[:1]
    for chunk in options.chunk_sizes:
        with torch.no_grad():
            _, memory[str(chunk)] = peak_tensor_bytes(lambda c=chunk: model.encode_stream(chunks_of(one, c)))
    details["peak_tensor_bytes_per_chunk_size"] = memory
    with torch.no_grad():
        _, whole = peak_tensor_bytes(lambda: model.encode(one))
    details["peak_tensor_bytes_whole_set"] = whole
    primary = "max_abs_diff"
    return EvalResult(metrics=metrics, primary=primary, details=details)


@register_protocol("calibration", description="accuracy, NLL and ECE of a point-cloud set model, clean and "
                                              "corrupted, with and without MC set-element dropout")
def calibration_protocol(request: EvalRequest, reporter: Reporter) -> EvalResult:
    options = request.parse_options(CalibrationOptions)
    loaded = load_set_model(request.ref)
    if loaded.task.get("type") != "classify":
        raise UsageError(f"{loaded.source}: calibration scores classifiers; this model predicts mixtures",
                         hint="use --protocol mbc")
    clouds, where = _held_out_clouds(loaded, request)
    model, metrics = loaded.model, {}
    for label, points in (("", clouds.test_points), ("corrupted_", corrupt(clouds.test_points, options.corruption, 0))):
        for mc, rate in (("", 0.0), ("mc_", options.dropout)):
            probs = class_probabilities(model, points, chunk_size=options.eval_chunk, dropout=rate,
                                        mc_samples=options.mc_samples)
            metrics.update({f"{label}{mc}{k}": v for k, v in
                            classification_scores(probs, clouds.test_labels, options.bins).items()})
    reporter.info(f"{loaded.source}: ECE {metrics['ece']:.3f} clean, {metrics['corrupted_ece']:.3f} corrupted")
    return EvalResult(metrics=metrics, primary="ece",
                      details={"model": loaded.source, "data": f"{where} (held out)", "corruption": options.corruption,
                               "dropout": options.dropout, "mc_samples": options.mc_samples})
