"""One task's meta-learning loss for each method, on a shared initialisation ``weights``.

Every method adapts with the same inner loop (``adapt``) and attacks with the
same PGD; they differ in what is attacked and what the outer loss is::

    maml   p' = adapt(S);                              L = CE(p', Q)
    aq     p' = adapt(S);  Q* = PGD(p', Q, labels);     L = CE(p', Q*)
    adml   pc = adapt(S);  S* = PGD(p, S);  pa = adapt(S*);  Q* = PGD(pc, Q)
                                                        L = CE(pc, Q*) + CE(pa, Q)
    mavrl  x1, x2 = two views of S
           p1 = adapt(x1);  p2 = adapt(x2)              (dual inner loops from one initialisation)
           x1* = argmax NT-Xent(g(f_p1(x1 + d)), g(f_p2(x2)))   (label-free, each view against its own encoder)
           x2* = argmax NT-Xent(g(f_p2(x2 + d)), g(f_p1(x1)))
           L = agreement(g(f_p1(x1*)), g(f_p2(x2*))) + clean_weight * (CE(p1, Q) + CE(p2, Q)) / 2
    rocl   (no tasks) x1, x2 = two views of a batch; x1* = argmax NT-Xent(g(f(x1 + d)), g(f(x2)))
           L = NT-Xent(g(f(x1)), g(f(x2))) + NT-Xent(g(f(x1*)), g(f(x2)))

Attacks see the adapted weights as constants (detached): differentiating the
outer loss through PGD would cost memory for nothing the method asks for.
First-order inner loops detach the inner gradients; second-order ones keep
their graph (``create_graph``), so the outer gradient flows through them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mltk.engines.robust.attacks.classifier import pgd
from mltk.engines.robust.attacks.instance import instance_attack
from mltk.engines.robust.config import MavrlConfig
from mltk.engines.robust.contrastive import negative_cosine, nt_xent
from mltk.engines.robust.episodes import Task, augmented_view
from mltk.engines.robust.fewshot_net import Adapted, FewShotNet, Weights, adapted_call


def adapt(net: FewShotNet, weights: Weights, images: Tensor, labels: Tensor, *, steps: int, lr: float,
          second_order: bool, loss: str = "ce", temperature: float = 0.5,
          view_of=None) -> Weights:
    """``steps`` SGD steps of the inner loss from ``weights``; parameters the loss does not reach stay as they are.

    ``loss="simclr"`` adapts label-free: NT-Xent between ``images`` and ``view_of(images)``.
    """
    for _ in range(steps):
        if loss == "ce":
            inner = F.cross_entropy(adapted_call(net, weights, images), labels)
        else:
            inner = nt_xent(adapted_call(net, weights, images, "projection"),
                            adapted_call(net, weights, view_of(images), "projection"), temperature)
        names = [k for k, v in weights.items() if v.requires_grad]
        grads = torch.autograd.grad(inner, [weights[k] for k in names], create_graph=second_order,
                                    allow_unused=True)
        updated = dict(weights)
        for name, grad in zip(names, grads, strict=True):
            if grad is not None:
                updated[name] = weights[name] - lr * (grad if second_order else grad.detach())
        weights = updated
    return weights


class TaskLosses:
    """The per-task losses of ``cfg.method`` for ``net`` (whose parameters are the shared initialisation)."""

    def __init__(self, net: FewShotNet, cfg: MavrlConfig):
        self.net, self.cfg = net, cfg

    def _adapt(self, weights: Weights, images: Tensor, labels: Tensor, generator: torch.Generator) -> Weights:
        inner = self.cfg.inner
        return adapt(self.net, weights, images, labels, steps=inner.steps, lr=inner.lr,
                     second_order=inner.second_order, loss=inner.loss, temperature=self.cfg.attack.temperature,
                     view_of=lambda x: self._view(x, generator))

    def _view(self, images: Tensor, generator: torch.Generator) -> Tensor:
        m = self.cfg.mavrl
        return augmented_view(images, crop_scale=m.crop_scale, flip=m.flip, generator=generator)

    def _pgd(self, weights: Weights, images: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
        a = self.cfg.attack
        return pgd(Adapted(self.net, weights), images, labels, eps=a.eps, step_size=a.step_size, steps=a.steps,
                   random_start=a.random_start, generator=generator)

    def _logits(self, weights: Weights, images: Tensor) -> Tensor:
        return adapted_call(self.net, weights, images)

    def __call__(self, task: Task, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss 0-d, statistics) of one task; every random draw comes from ``generator``."""
        weights = dict(self.net.named_parameters())
        return getattr(self, self.cfg.method)(weights, task, generator)

    def maml(self, weights, task, generator):
        adapted = self._adapt(weights, task.support, task.support_labels, generator)
        logits = self._logits(adapted, task.query)
        return F.cross_entropy(logits, task.query_labels), {"query_accuracy": _accuracy(logits, task.query_labels)}

    def aq(self, weights, task, generator):
        adapted = self._adapt(weights, task.support, task.support_labels, generator)
        attacked = self._pgd(adapted, task.query, task.query_labels, generator)
        logits = self._logits(adapted, attacked)
        return (F.cross_entropy(logits, task.query_labels),
                {"query_robust_accuracy": _accuracy(logits, task.query_labels)})

    def adml(self, weights, task, generator):
        clean_adapted = self._adapt(weights, task.support, task.support_labels, generator)
        attacked_support = self._pgd(weights, task.support, task.support_labels, generator)
        adversarial_adapted = self._adapt(weights, attacked_support, task.support_labels, generator)
        attacked_query = self._pgd(clean_adapted, task.query, task.query_labels, generator)
        robust_logits = self._logits(clean_adapted, attacked_query)
        loss = (F.cross_entropy(robust_logits, task.query_labels)
                + F.cross_entropy(self._logits(adversarial_adapted, task.query), task.query_labels))
        return loss, {"query_robust_accuracy": _accuracy(robust_logits, task.query_labels)}

    def mavrl(self, weights, task, generator):
        cfg, a = self.cfg, self.cfg.attack
        view1, view2 = self._view(task.support, generator), self._view(task.support, generator)
        adapted1 = self._adapt(weights, view1, task.support_labels, generator)
        adapted2 = self._adapt(weights, view2, task.support_labels, generator)
        embed1 = Adapted(self.net, adapted1, "projection")
        embed2 = Adapted(self.net, adapted2, "projection")
        budget = dict(eps=a.eps, step_size=a.step_size, steps=a.steps, temperature=a.temperature,
                      random_start=a.random_start, generator=generator)
        attacked1 = instance_attack(embed1, view1, view2, embed_other=embed2, **budget)
        attacked2 = instance_attack(embed2, view2, view1, embed_other=embed1, **budget)
        z1 = adapted_call(self.net, adapted1, attacked1, "projection")
        z2 = adapted_call(self.net, adapted2, attacked2, "projection")
        agreement = nt_xent(z1, z2, a.temperature) if cfg.mavrl.agreement == "ntxent" else negative_cosine(z1, z2)
        logits1, logits2 = self._logits(adapted1, task.query), self._logits(adapted2, task.query)
        clean = 0.5 * (F.cross_entropy(logits1, task.query_labels) + F.cross_entropy(logits2, task.query_labels))
        loss = cfg.mavrl.agreement_weight * agreement + cfg.mavrl.clean_weight * clean
        return loss, {"agreement": agreement.detach(), "clean_task": clean.detach(),
                      "query_accuracy": _accuracy(logits1, task.query_labels)}

    def rocl(self, weights, task, generator):
        a = self.cfg.attack
        images = torch.cat([task.support, task.query])
        view1, view2 = self._view(images, generator), self._view(images, generator)
        embed = Adapted(self.net, weights, "projection")
        attacked = instance_attack(embed, view1, view2, eps=a.eps, step_size=a.step_size, steps=a.steps,
                                   temperature=a.temperature, random_start=a.random_start, generator=generator)
        z2 = adapted_call(self.net, weights, view2, "projection")
        loss = (nt_xent(adapted_call(self.net, weights, view1, "projection"), z2, a.temperature)
                + nt_xent(adapted_call(self.net, weights, attacked, "projection"), z2, a.temperature))
        return loss, {}


def _accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    return (logits.detach().argmax(1) == labels).double().mean()
