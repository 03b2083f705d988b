"""Projected gradient ascent on an input perturbation: the one loop every attack here is.

Given an objective ``loss_of(x_adv) -> [B]`` (one loss per example), the
attack takes ``steps`` signed (L-inf) or normalised (L2) gradient steps on
the perturbation, each followed by a projection onto the epsilon-ball around
the clean images and a clamp to the image range [0, 1]::

    delta = uniform random start in the ball (or 0)
    repeat steps:  x = clamp(x0 + delta, 0, 1)
                   g = d sum(loss_of(x)) / d x
                   delta = project_ball(delta + step_size * direction(g))
    with restarts: keep, per example, the perturbation that fooled (``fooled``) or scored the higher loss

The model's weights are never updated (the gradient is taken with respect to
the input only) and the caller decides the model's mode (see ``eval_mode``).
The random start uses ``generator`` when given, else the global generator,
drawing exactly what torchattacks draws, so the two can be compared on one seed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

NORMS = ("linf", "l2")
_TINY = 1e-12


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with every submodule in eval mode (BatchNorm uses, and never updates, its running
    statistics; dropout is off), each submodule's own mode restored afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def random_start(images: Tensor, *, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A random perturbation inside the ball: uniform per pixel (L-inf), or a uniform-radius random
    direction (L2), as torchattacks draws them."""
    if generator is not None and generator.device.type != images.device.type:  # a CPU generator for a GPU batch
        return random_start(images.cpu(), eps=eps, norm=norm, generator=generator).to(images.device)
    if norm == "linf":
        return torch.empty_like(images).uniform_(-eps, eps, generator=generator)
    delta = torch.empty_like(images).normal_(generator=generator)
    norms = delta.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (images.dim() - 1)))
    radius = torch.zeros_like(norms).uniform_(0, 1, generator=generator)
    return delta * radius / norms.clamp_min(_TINY) * eps


def project(delta: Tensor, *, eps: float, norm: str) -> Tensor:
    """``delta`` [B, ...] moved into the eps-ball of ``norm``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    norms = delta.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (delta.dim() - 1)))
    return delta * torch.clamp(eps / norms.clamp_min(_TINY), max=1.0)


def ascent_direction(grad: Tensor, *, norm: str) -> Tensor:
    """The steepest-ascent direction of unit ``norm`` for ``grad``."""
    if norm == "linf":
        return grad.sign()
    norms = grad.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (grad.dim() - 1)))
    return grad / (norms + 1e-10)


def projected_gradient_ascent(loss_of: Callable[[Tensor], Tensor], images: Tensor, *, eps: float,
                              step_size: float, steps: int, norm: str = "linf", start: bool = True,
                              generator: torch.Generator | None = None) -> Tensor:
    """images float [B, ...] in [0, 1] -> adversarial images [B, ...] in [0, 1] and in the eps-ball.

    ``loss_of(x) -> [B]`` is the objective being increased, one value per example (or their sum, 0-d).
    """
    if norm not in NORMS:
        raise ValueError(f"norm {norm!r}: expected one of {NORMS}")
    clean = images.detach()
    delta = random_start(clean, eps=eps, norm=norm, generator=generator) if start else torch.zeros_like(clean)
    adv = (clean + delta).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_of(adv).sum()
            (grad,) = torch.autograd.grad(loss, adv)
        delta = project(adv.detach() + step_size * ascent_direction(grad, norm=norm) - clean, eps=eps, norm=norm)
        adv = (clean + delta).clamp(0, 1)
    return adv.detach()


def best_of_restarts(attack_once: Callable[[], Tensor], score: Callable[[Tensor], tuple[Tensor, Tensor]],
                     restarts: int) -> Tensor:
    """The per-example best of ``restarts`` runs of ``attack_once() -> adv [B, ...]``.

    ``score(adv) -> (fooled bool [B], loss [B])``: an example keeps a run that fooled the model over
    one that did not, and otherwise the run with the higher loss.
    """
    best = attack_once()
    if restarts == 1:  # nothing to compare: no scoring pass
        return best
    best_fooled, best_loss = score(best)
    for _ in range(restarts - 1):
        adv = attack_once()
        fooled, loss = score(adv)
        better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (loss > best_loss))
        best = torch.where(better.view(-1, *([1] * (adv.dim() - 1))), adv, best)
        best_fooled, best_loss = best_fooled | fooled, torch.where(better, loss, best_loss)
    return best
