"""``mltk eval REF --protocol fewshot --data mnist --attack pgd``: N-way K-shot tasks from a domain,
the encoder adapted on each support set, clean and robust accuracy on the query sets with 95% intervals.

Without ``--data`` the tasks come from the unseen classes of the domain the
encoder was meta-trained on; with ``--data`` from that domain (an unseen
domain: ``mnist``, ``usps``, ``dtd``, ...; on the training domain itself,
``--classes unseen`` keeps to the classes held out of meta-training).
"""

from __future__ import annotations

import dataclasses

from mltk.core.catalog import EvalRequest, EvalResult, register_protocol
from mltk.core.console import Reporter
from mltk.core.device import resolve_device
from mltk.core.errors import UsageError
from mltk.engines.robust.artifact import load_fewshot_net
from mltk.engines.robust.attacks.budget import parse_fraction
from mltk.engines.robust.attacks.classifier import CLASSIFIER_ATTACKS, AttackSettings
from mltk.engines.robust.domains import load_domain
from mltk.engines.robust.episodes import split_classes
from mltk.engines.robust.fewshot_eval import (
    ADAPTATIONS,
    NORM_STATISTICS,
    FewShotSettings,
    evaluate_fewshot,
)


@dataclasses.dataclass(frozen=True)
class FewShotOptions:
    way: int = 5
    shot: int = 1
    queries: int = 15
    tasks: int = 600
    attack: str = "pgd"  # pgd, pgd-l2, fgsm
    eps: str = "8/255"
    step_size: str = ""  # empty = eps/4
    steps: int = 20
    restarts: int = 1
    adapt: str = "finetune"  # finetune (the method's inner loop) or prototype (nearest class mean)
    test_steps: int = 0  # fine-tuning steps; 0 = the artifact's inner.test_steps
    inner_lr: float = 0.0  # fine-tuning step size; 0 = the artifact's inner.lr
    norm_statistics: str = "support"  # BatchNorm at test time: the support set's statistics, or each batch's
    classes: str = "unseen"  # on the meta-training domain: unseen, train or all of its classes
    max_per_class: int = 0
    seed: int = 0


def _checked(options: FewShotOptions) -> None:
    problems = []
    if options.attack not in CLASSIFIER_ATTACKS:
        raise UsageError(f"--attack: unknown attack {options.attack!r}",
                         hint=f"attacks of --protocol fewshot: {', '.join(CLASSIFIER_ATTACKS)}")
    if options.adapt not in ADAPTATIONS:
        problems.append(f"--adapt: {options.adapt!r} is not one of {', '.join(ADAPTATIONS)}")
    if options.norm_statistics not in NORM_STATISTICS:
        problems.append(f"--norm-statistics: {options.norm_statistics!r} is not one of {', '.join(NORM_STATISTICS)}")
    if options.classes not in ("unseen", "train", "all"):
        problems.append(f"--classes: {options.classes!r} is not one of unseen, train, all")
    for key in ("way", "shot", "queries", "tasks", "steps", "restarts"):
        if getattr(options, key) < 1:
            problems.append(f"--{key}: must be at least 1, got {getattr(options, key)}")
    if problems:
        raise UsageError("--protocol fewshot: " + "; ".join(problems))


@register_protocol("fewshot", description="N-way K-shot tasks on a (possibly unseen) domain: clean and PGD "
                                          "accuracy after adaptation, with 95% intervals (--way --shot --tasks)")
def fewshot_protocol(request: EvalRequest, reporter: Reporter) -> EvalResult:
    options = request.parse_options(FewShotOptions)
    _checked(options)
    eps = parse_fraction(options.eps, "eps")
    step_size = parse_fraction(options.step_size, "step_size") if str(options.step_size).strip() else eps / 4
    attack = AttackSettings(name=options.attack, eps=eps, step_size=step_size, steps=options.steps,
                            restarts=options.restarts)
    net, card, source = load_fewshot_net(request.ref)
    spec, trained_on = card["network"], card.get("task", {}).get("domain", "")
    domain = request.data or trained_on
    config_data = card.get("config", {}).get("data", {})
    data_dir = request.data_dir or (config_data.get("data_dir") if domain == trained_on else None)
    pool = load_domain(domain, image_size=spec["image_size"], channels=spec["in_channels"], data_dir=data_dir,
                       max_per_class=options.max_per_class)
    if domain == trained_on and options.classes != "all":
        train, unseen = split_classes(pool, train_share=config_data.get("train_classes", 0.7),
                                      seed=config_data.get("class_seed", 0))
        pool = unseen if options.classes == "unseen" else train
    inner = card.get("inner", {})
    settings = FewShotSettings(n_way=options.way, k_shot=options.shot, queries=options.queries, tasks=options.tasks,
                               seed=options.seed, adaptation=options.adapt,
                               test_steps=options.test_steps or int(inner.get("test_steps", 10)),
                               inner_lr=options.inner_lr or float(inner.get("lr", 0.1)),
                               norm_statistics=options.norm_statistics)
    device = resolve_device(request.device)
    reporter.info(f"{source} ({card.get('method')}): {options.tasks} {options.way}-way {options.shot}-shot tasks of "
                  f"{domain} ({len(pool.names)} classes), adapt {options.adapt}, {options.attack} at eps {eps:.5g}")
    with reporter.progress(options.tasks, description="tasks") as bar:
        scores = evaluate_fewshot(net, pool, settings, attack, device, progress=bar.update)
    details = {"model": source, "method": card.get("method"), "data": domain,
               "classes": options.classes if domain == trained_on else "all (unseen domain)",
               "way": options.way, "shot": options.shot, "queries": options.queries, "tasks": options.tasks,
               "task_seed": options.seed, "adapt": options.adapt, "norm_statistics": options.norm_statistics, "test_steps": settings.test_steps,
               "inner_lr": settings.inner_lr, "attack": options.attack, "eps": eps, "step_size": step_size,
               "steps": options.steps, "restarts": options.restarts}
    metrics = {k: v for k, v in scores.items() if k != "tasks"}
    return EvalResult(metrics=metrics, primary="robust_accuracy", details=details)
