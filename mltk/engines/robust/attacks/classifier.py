"""Attacks on a classifier ``model(x in [0, 1]) -> logits``: L-inf and L2 PGD, FGSM, by name.

Every attack runs with the model in eval mode (BatchNorm reads its running
statistics and never updates them) and puts each submodule's mode back
afterwards; perturbations stay in their eps-ball and the images in [0, 1].
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mltk.engines.robust.attacks.projected import (
    best_of_restarts,
    eval_mode,
    projected_gradient_ascent,
)

# name -> (norm, iterative): the attacks a classifier can be given by name (autoattack: see autoattack.py).
CLASSIFIER_ATTACKS = {"pgd": ("linf", True), "pgd-l2": ("l2", True), "fgsm": ("linf", False)}


@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """One attack's budget: ``eps`` and ``step_size`` on the [0, 1] pixel scale."""

    name: str = "pgd"
    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 20
    restarts: int = 1
    random_start: bool = True

    def problems(self) -> list[str]:
        found = []
        if self.name not in CLASSIFIER_ATTACKS:
            found.append(f"attack {self.name!r} is not one of {', '.join(CLASSIFIER_ATTACKS)}")
        for key in ("eps", "step_size"):
            value = getattr(self, key)
            if not 0 <= value <= 1:
                found.append(f"{key}: must lie in [0, 1] (pixel scale), got {value}")
        if self.steps < 1:
            found.append(f"steps: must be at least 1, got {self.steps}")
        if self.restarts < 1:
            found.append(f"restarts: must be at least 1, got {self.restarts}")
        return found


def _cross_entropy_of(model: nn.Module, labels: Tensor):
    # The summed loss has the per-example losses' gradients and is cheaper to differentiate than "none".
    return lambda x: F.cross_entropy(model(x), labels, reduction="sum")


def pgd(model: nn.Module, images: Tensor, labels: Tensor, *, eps: float, step_size: float, steps: int,
        norm: str = "linf", restarts: int = 1, random_start: bool = True,
        generator: torch.Generator | None = None) -> Tensor:
    """Madry et al.'s PGD maximising cross-entropy: images [B, C, H, W] in [0, 1], labels [B] -> adversarial
    images [B, C, H, W]; with ``restarts`` > 1 each example keeps its most damaging run."""
    loss_of = _cross_entropy_of(model, labels)

    def once() -> Tensor:
        return projected_gradient_ascent(loss_of, images, eps=eps, step_size=step_size, steps=steps, norm=norm,
                                         start=random_start, generator=generator)

    def score(adv: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            logits = model(adv)
        return logits.argmax(1) != labels, F.cross_entropy(logits, labels, reduction="none")

    with eval_mode(model):
        return best_of_restarts(once, score, restarts)


def fgsm(model: nn.Module, images: Tensor, labels: Tensor, *, eps: float) -> Tensor:
    """Goodfellow et al.'s one signed step of size eps from the clean images."""
    with eval_mode(model):
        return projected_gradient_ascent(_cross_entropy_of(model, labels), images, eps=eps, step_size=eps, steps=1,
                                         norm="linf", start=False)


def attack(model: nn.Module, images: Tensor, labels: Tensor, settings: AttackSettings,
           generator: torch.Generator | None = None) -> Tensor:
    """``settings.name``'s adversarial images for (images, labels)."""
    norm, iterative = CLASSIFIER_ATTACKS[settings.name]
    if not iterative:
        return fgsm(model, images, labels, eps=settings.eps)
    return pgd(model, images, labels, eps=settings.eps, step_size=settings.step_size, steps=settings.steps,
               norm=norm, restarts=settings.restarts, random_start=settings.random_start, generator=generator)
