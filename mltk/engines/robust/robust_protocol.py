"""``mltk eval REF --protocol robust --attack pgd --eps 8/255``: clean and adversarial accuracy of any
classifier artifact in the registry.

Each listed attack (``--attack pgd,fgsm,autoattack``) runs on every scored
image; an image counts as robust when no attack fooled the model, so
``robust_accuracy`` is the per-image worst case over the attacks and
``robust_accuracy_<attack>`` each attack's own. The attack settings are
reported with the numbers. Images the model gets wrong clean are not attacked
(they count as not robust), as AutoAttack does.
"""

from __future__ import annotations

import dataclasses

import torch

from mltk.core.catalog import EvalRequest, EvalResult, register_protocol
from mltk.core.console import Reporter
from mltk.core.device import resolve_device
from mltk.core.errors import UsageError
from mltk.core.seeding import derive_seed
from mltk.engines.robust.attacks.autoattack import autoattack
from mltk.engines.robust.attacks.budget import parse_fraction
from mltk.engines.robust.attacks.classifier import CLASSIFIER_ATTACKS, AttackSettings, attack
from mltk.nn.artifacts import load_classifier
from mltk.nn.classifiers.evaluation_data import split_for

ATTACK_NAMES = (*CLASSIFIER_ATTACKS, "autoattack")


@dataclasses.dataclass(frozen=True)
class RobustOptions:
    attack: str = "pgd"  # one name or a comma list: pgd, pgd-l2, fgsm, autoattack
    eps: str = "8/255"  # on the [0, 1] pixel scale; a number or a fraction
    step_size: str = ""  # empty = eps/4 (2/255 at 8/255)
    steps: int = 20
    restarts: int = 1
    random_start: bool = True
    images: int = 0  # score the first N images of the split; 0 = all
    autoattack_images: int = 0  # AutoAttack on only the first N scored images (it is slow); 0 = all
    seed: int = 0


def parse_attacks(text: str) -> list[str]:
    names = [name.strip() for name in str(text).split(",") if name.strip()]
    unknown = [name for name in names if name not in ATTACK_NAMES]
    if unknown or not names:
        raise UsageError(f"--attack: unknown attack {', '.join(map(repr, unknown)) or repr(text)}",
                         hint=f"attacks: {', '.join(ATTACK_NAMES)} (a comma list runs several)")
    return names


def attack_settings(options: RobustOptions, name: str) -> AttackSettings:
    eps = parse_fraction(options.eps, "eps")
    step_size = parse_fraction(options.step_size, "step_size") if str(options.step_size).strip() else eps / 4
    settings = AttackSettings(name=name if name in CLASSIFIER_ATTACKS else "pgd", eps=eps, step_size=step_size,
                              steps=options.steps, restarts=options.restarts, random_start=options.random_start)
    problems = settings.problems()
    if problems:
        raise UsageError(f"--protocol robust: {'; '.join(problems)}")
    return settings


@register_protocol("robust", description="clean, PGD/FGSM and AutoAttack accuracy of any classifier "
                                         "(--attack pgd --eps 8/255 --steps 20 --restarts 1)")
def robust_protocol(request: EvalRequest, reporter: Reporter) -> EvalResult:
    options = request.parse_options(RobustOptions)
    names = parse_attacks(options.attack)
    settings = {name: attack_settings(options, name) for name in names}
    loaded = load_classifier(request.ref)
    spec, dataset = split_for(loaded, request)
    count = len(dataset) if options.images <= 0 else min(options.images, len(dataset))
    device = resolve_device(request.device)
    model = loaded.model.to(device).eval()
    reporter.info(f"attacking {loaded.source} on {spec.name} {request.split} ({count} images) with "
                  f"{', '.join(names)} at eps {settings[names[0]].eps:.5g}")
    clean_ok = torch.zeros(count, dtype=torch.bool)
    survived = {name: torch.zeros(count, dtype=torch.bool) for name in names}
    generator = torch.Generator(device=device).manual_seed(derive_seed(options.seed, 0))
    for start in range(0, count, request.batch_size):
        rows = slice(start, min(start + request.batch_size, count))
        images = dataset.images[rows].to(device).float().div_(255)
        labels = dataset.labels[rows].to(device)
        with torch.no_grad():
            correct = model(images).argmax(1) == labels
        clean_ok[rows] = correct.cpu()
        for name in names:
            survived[name][rows] = _survivors(model, images, labels, correct, name, settings[name], options,
                                              loaded.arch_args["num_classes"], start, generator).cpu()
    metrics = {"clean_accuracy": clean_ok.double().mean().item()}
    robust = torch.stack([survived[name] for name in names if name != "autoattack"] or [clean_ok]).all(0)
    if "autoattack" in survived:
        limit = _autoattack_count(options, count)
        robust[:limit] &= survived["autoattack"][:limit]
    metrics["robust_accuracy"] = robust.double().mean().item()
    for name in names:
        scored = survived[name][:_autoattack_count(options, count)] if name == "autoattack" else survived[name]
        metrics[f"robust_accuracy_{name}"] = scored.double().mean().item()
    first = settings[names[0]]
    details = {"model": loaded.source, "data": spec.name, "split": request.split, "images": count,
               "attacks": names, "eps": first.eps, "step_size": first.step_size, "steps": first.steps,
               "restarts": first.restarts, "random_start": first.random_start, "norm_of_pgd": "linf",
               "autoattack_images": _autoattack_count(options, count) if "autoattack" in names else 0,
               "seed": options.seed, "bn_mode": "eval"}
    return EvalResult(metrics=metrics, primary="robust_accuracy", details=details)


def _autoattack_count(options: RobustOptions, count: int) -> int:
    return count if options.autoattack_images <= 0 else min(options.autoattack_images, count)


def _survivors(model, images, labels, correct, name, settings, options, num_classes, start, generator):
    """bool [B]: the images of this batch that are still classified right under attack ``name``."""
    survived = correct.clone()
    if name == "autoattack":
        limit = _autoattack_count(options, start + len(labels)) - start
        if limit <= 0:
            return survived
        keep = torch.nonzero(correct[:limit]).flatten()
        if len(keep):
            adv = autoattack(model, images[keep], labels[keep], eps=settings.eps, num_classes=num_classes,
                             seed=options.seed)
            with torch.no_grad():
                survived[keep] = model(adv).argmax(1) == labels[keep]
        return survived
    keep = torch.nonzero(correct).flatten()
    if len(keep):
        adv = attack(model, images[keep], labels[keep], settings, generator=generator)
        with torch.no_grad():
            survived[keep] = model(adv).argmax(1) == labels[keep]
    return survived
