"""``mltk eval REF --protocol condensed``: how well fresh networks learn from a condensed set.

The standard protocol of DC/DSA/DM (``evaluate_synset``): train a freshly
initialised ConvNet on the decoded synthetic images, SGD lr 0.01, momentum
0.9, weight decay 5e-4, lr x0.1 at half the epochs, batch 256, DSA
augmentation per image; score it on the real test split. Report the mean and
the (population) standard deviation of the test accuracy over ``runs``
networks. Run r is seeded by (seed, r): the same artifact and seed give the
same accuracies.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch

from mltk.core.catalog import EvalRequest, EvalResult, register_protocol
from mltk.core.console import Reporter
from mltk.core.device import resolve_device
from mltk.core.distributed import DistInfo, all_reduce_sum
from mltk.core.errors import UsageError
from mltk.core.seeding import derive_seed, seed_everything
from mltk.data import DataSpec, dataset_info, load_split
from mltk.data.images.dataset import ImageDataset
from mltk.engines.condense.artifact import CondensedSet, load_condensed
from mltk.engines.condense.config import EvalSpec, NetSpec
from mltk.engines.condense.dsa import SiameseAugment, parse_strategy
from mltk.nn import build_model
from mltk.nn.classifiers.evaluation import evaluate_classifier
from mltk.nn.classifiers.fit import FitSchedule, fit_classifier


@dataclasses.dataclass(frozen=True)
class CondensedOptions:
    """``--runs``, ``--epochs``, ... ; unset ones take the values the artifact was condensed with."""

    runs: int | None = None
    epochs: int | None = None
    model: str | None = None  # architecture of the fresh networks (default: the matching ConvNet)
    lr: float | None = None
    train_batch: int | None = None
    dsa: str | None = None
    seed: int = 0


def evaluate_condensed(images: torch.Tensor, labels: torch.Tensor, test: ImageDataset, *, net: NetSpec,
                       spec: EvalSpec, mean: list[float], std: list[float], flip_ok: bool, seed: int,
                       device: torch.device, batch_size: int = 512, dist: DistInfo | None = None,
                       reporter: Reporter | None = None) -> dict:
    """Train ``spec.runs`` fresh networks on (images [N, C, H, W] on the [0, 1] scale, labels [N]); score on ``test``.

    Under data parallelism the runs are dealt out over the ranks and their
    accuracies gathered: every rank returns the figures of one process.
    """
    dist = dist or DistInfo()
    if spec.runs < 1 or spec.epochs < 0:
        raise UsageError(f"condensed evaluation needs runs >= 1 and epochs >= 0, got runs={spec.runs}, "
                         f"epochs={spec.epochs}")
    channels, height, width = images.shape[1:]
    if (channels, height, width) != tuple(test.image_shape):
        raise UsageError(f"the condensed images are {channels}x{height}x{width}, the test split "
                         f"{'x'.join(map(str, test.image_shape))}", hint="evaluate on the dataset it came from")
    dsa = SiameseAugment(parse_strategy(spec.dsa, flip_ok=flip_ok, key="eval.dsa"))
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)

    def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # Augment in the normalised space, where the DSA magnitudes are defined.
        draw = dsa.draw(len(batch), (height, width), generator, one_family=True)
        normalised = dsa((batch - mean_t) / std_t, draw, torch.arange(len(batch)))
        return normalised * std_t + mean_t

    schedule = FitSchedule(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, momentum=spec.momentum,
                           weight_decay=spec.weight_decay)
    accuracies = torch.zeros(spec.runs, dtype=torch.float64, device=device)
    mine = list(range(dist.rank, spec.runs, dist.world_size))
    with _EvaluationProgress(reporter, runs=len(mine), epochs=spec.epochs) as progress:
        for index, run in enumerate(mine):
            run_seed = derive_seed(seed, run)
            seed_everything(run_seed % (1 << 63))
            model = build_model(net.arch, num_classes=test.num_classes, in_channels=channels, image_size=height,
                                mean=mean, std=std, **net.options)
            fit_classifier(model, images, labels, schedule, seed=run_seed, device=device,
                           augment=augment if dsa.enabled else None,
                           on_epoch=lambda done, index=index, run=run: progress.epoch(index, run, spec.runs, done))
            scores = evaluate_classifier(model, test, batch_size=batch_size, device=device)
            accuracies[run] = scores["accuracy"]
            progress.line(f"evaluation run {run + 1}/{spec.runs}: test accuracy {scores['accuracy']:.4f}")
    all_reduce_sum(accuracies, dist)
    values = accuracies.tolist()
    mean_acc = sum(values) / len(values)
    return {"accuracies": values, "mean": mean_acc,
            "std": math.sqrt(sum((v - mean_acc) ** 2 for v in values) / len(values))}


# Off a terminal, a line at least this often while the fresh networks train: the evaluation of a
# paper-size set runs for minutes and must not look hung in a CI log.
PROGRESS_LINE_SECONDS = 30.0


class _EvaluationProgress:
    """A bar over every epoch of every run on a terminal; elsewhere a stderr line every
    ``PROGRESS_LINE_SECONDS`` and one per finished run. Silent without a reporter."""

    def __init__(self, reporter: Reporter | None, *, runs: int, epochs: int):
        self.epochs = epochs
        self.bar = reporter.progress(runs * epochs, description="evaluate") if reporter is not None else None
        self.last_line = time.perf_counter()

    def __enter__(self) -> _EvaluationProgress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def epoch(self, index: int, run: int, runs: int, done: int) -> None:
        if self.bar is None:
            return
        if self.bar.wants_update():
            self.bar.update(index * self.epochs + done)
        if not self.bar.reporter.interactive and time.perf_counter() - self.last_line >= PROGRESS_LINE_SECONDS:
            self.line(f"evaluation run {run + 1}/{runs}: epoch {done}/{self.epochs}")

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.line(text)
            self.last_line = time.perf_counter()


def real_split(cset: CondensedSet, request: EvalRequest) -> tuple[DataSpec, ImageDataset]:
    """The real split to score on: the artifact's own data spec (hold-outs included) unless --data says otherwise."""
    spec = DataSpec(name=request.data) if request.data else cset.data_spec()
    spec = request.located(spec)
    dataset = load_split(spec, request.split)
    if dataset.num_classes != len(cset.class_names):
        raise UsageError(f"{spec.name} has {dataset.num_classes} classes, {cset.source} was condensed to "
                         f"{len(cset.class_names)}", hint="evaluate on the dataset it was condensed from")
    return spec, dataset


@register_protocol("condensed", description="fresh ConvNets trained on a condensed dataset: test accuracy, "
                                           "mean and std over --runs (options --epochs --model --lr --seed)")
def condensed_protocol(request: EvalRequest, reporter: Reporter) -> EvalResult:
    options = request.parse_options(CondensedOptions)
    cset = load_condensed(request.ref)
    stored = EvalSpec(**cset.card["condensed"]["eval"])
    spec = dataclasses.replace(stored, **{
        key: value for key, value in (("runs", options.runs), ("epochs", options.epochs), ("lr", options.lr),
                                      ("batch_size", options.train_batch), ("dsa", options.dsa))
        if value is not None})
    if spec.runs < 1:
        spec = dataclasses.replace(spec, runs=1)
    net = NetSpec(**cset.card["condensed"]["net"])
    if options.model and options.model != net.arch:
        net = NetSpec(arch=options.model)
    data_spec, test = real_split(cset, request)
    device = resolve_device(request.device)
    images, labels = cset.pixels()
    reporter.info(f"training {spec.runs} fresh {net.arch} on {len(images)} condensed images of {cset.source} "
                  f"for {spec.epochs} epochs; scoring on {data_spec.name} {request.split} ({len(test)} images)")
    result = evaluate_condensed(images, labels, test, net=net, spec=spec, mean=cset.info["normalization"]["mean"],
                                std=cset.info["normalization"]["std"], flip_ok=dataset_info(data_spec.name).flip_ok,
                                seed=options.seed, device=device, batch_size=request.batch_size, reporter=reporter)
    storage = cset.info["storage"]
    return EvalResult(
        metrics={"accuracy": result["mean"], "accuracy_std": result["std"]}, primary="accuracy",
        details={"artifact": cset.source, "method": cset.method, "ipc": cset.info["ipc"],
                 "accuracies": result["accuracies"], "runs": spec.runs, "epochs": spec.epochs, "model": net.arch,
                 "seed": options.seed, "synthetic_images": len(images), "stored_floats": storage["stored_floats"],
                 "data": data_spec.name, "split": request.split, "images": len(test)})
