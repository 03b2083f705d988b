"""Few-shot evaluation: adapt on each task's support set, then clean and PGD accuracy on its query set.

Task ``t`` of a seed is the same for every model (its generator depends on
(seed, t) only). Adaptation is the method's own or a prototype head:

* ``finetune``: ``test_steps`` first-order SGD steps of CE on the support set
  from the meta-learned weights (a head of another way count starts at zero);
* ``prototype``: class means of the support features; logits are negative
  squared distances to them (Snell et al.), the prototypes fixed while the
  query set is attacked.

BatchNorm normalises with the support set's statistics, recorded after
adaptation (``norm_statistics="support"``): each query image is then
classified on its own, so an attack on some images cannot shift the others'
normalisation (with ``"batch"``, the MAML-transductive choice, it can, and
AutoAttack's attacks on shrinking subsets would be scored inconsistently).

The attack is white-box PGD with the query labels against the adapted model.
Accuracies are means over tasks with a 95% normal interval (1.96 std / sqrt(tasks)).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from mltk.engines.robust.attacks.classifier import AttackSettings, attack
from mltk.engines.robust.domains import ClassPool
from mltk.engines.robust.episodes import check_task_shape, sample_task, task_generator
from mltk.engines.robust.fewshot_net import (
    Adapted,
    FewShotNet,
    Statistics,
    fixed_statistics,
    record_statistics,
)
from mltk.engines.robust.meta import adapt

ADAPTATIONS = ("finetune", "prototype")
NORM_STATISTICS = ("support", "batch")


@dataclasses.dataclass(frozen=True)
class FewShotSettings:
    n_way: int = 5
    k_shot: int = 1
    queries: int = 15
    tasks: int = 600
    seed: int = 0
    adaptation: str = "finetune"
    test_steps: int = 10
    inner_lr: float = 0.1
    norm_statistics: str = "support"  # support: BatchNorm uses the support set's statistics; batch: each batch's


class PrototypeClassifier(nn.Module):
    """x [B, C, S, S] -> logits [B, N] = -||f(x) - prototype_n||^2."""

    def __init__(self, net: FewShotNet, prototypes: Tensor, statistics: Statistics | None):
        super().__init__()
        self.net, self.prototypes, self.statistics = net, prototypes, statistics

    def forward(self, x: Tensor) -> Tensor:
        with fixed_statistics(self.net, self.statistics):
            return -torch.cdist(self.net(x, "features"), self.prototypes).pow(2)


def adapted_classifier(net: FewShotNet, support: Tensor, labels: Tensor, settings: FewShotSettings) -> nn.Module:
    """The classifier of one task after adapting ``net`` on its support set."""
    if settings.adaptation == "prototype":
        weights = dict(net.named_parameters())
        statistics = record_statistics(net, weights, support) if settings.norm_statistics == "support" else None
        with torch.no_grad(), fixed_statistics(net, statistics):
            features = net(support, "features")
        prototypes = torch.stack([features[labels == c].mean(0) for c in range(settings.n_way)])
        return PrototypeClassifier(net, prototypes, statistics)
    weights = {k: v.detach().clone().requires_grad_(True) for k, v in net.named_parameters()}
    if net.head.out_features != settings.n_way:
        weights["head.weight"] = torch.zeros(settings.n_way, net.head.in_features, device=support.device,
                                             requires_grad=True)
        weights["head.bias"] = torch.zeros(settings.n_way, device=support.device, requires_grad=True)
    with torch.enable_grad():
        weights = adapt(net, weights, support, labels, steps=settings.test_steps, lr=settings.inner_lr,
                        second_order=False)
    statistics = record_statistics(net, weights, support) if settings.norm_statistics == "support" else None
    return Adapted(net, weights, statistics=statistics)


def evaluate_fewshot(net: FewShotNet, pool: ClassPool, settings: FewShotSettings, attack_settings: AttackSettings,
                     device: torch.device, *, progress=None) -> dict:
    """Clean and robust query accuracy over ``settings.tasks`` tasks of ``pool``, with 95% intervals."""
    check_task_shape(pool, n_way=settings.n_way, k_shot=settings.k_shot, queries=settings.queries,
                     where="few-shot evaluation")
    net = net.to(device)
    clean, robust = [], []
    for t in range(settings.tasks):
        task = sample_task(pool, n_way=settings.n_way, k_shot=settings.k_shot, queries=settings.queries,
                           generator=task_generator(settings.seed, 104729, t))
        support, query = task.support.to(device), task.query.to(device)
        support_labels, query_labels = task.support_labels.to(device), task.query_labels.to(device)
        classifier = adapted_classifier(net, support, support_labels, settings)
        with torch.no_grad():
            clean.append((classifier(query).argmax(1) == query_labels).double().mean().item())
        adversarial = attack(classifier, query, query_labels, attack_settings,
                             generator=task_generator(settings.seed, 15485863, t))
        with torch.no_grad():
            robust.append((classifier(adversarial).argmax(1) == query_labels).double().mean().item())
        if progress is not None:
            progress(t + 1)
    return {"clean_accuracy": _mean(clean), "clean_ci95": _ci95(clean), "robust_accuracy": _mean(robust),
            "robust_ci95": _ci95(robust), "tasks": settings.tasks}


def _mean(values: list[float]) -> float:
    return sum(values) / max(1, len(values))


def _ci95(values: list[float]) -> float:
    if len(values) < 2:
        return float("nan")
    mean = _mean(values)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return 1.96 * math.sqrt(variance / len(values))
