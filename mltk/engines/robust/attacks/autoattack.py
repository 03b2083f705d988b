"""AutoAttack (Croce & Hein 2020) through torchattacks, the optional extra ``mltk[robust]``.

AutoAttack is the evaluation standard because it needs no tuning and catches
gradient masking that a hand-set PGD misses; mltk does not re-implement it.
"""

from __future__ import annotations

from torch import Tensor, nn

from mltk.core.errors import UsageError
from mltk.engines.robust.attacks.projected import eval_mode

INSTALL_HINT = "install the extra: pip install 'mltk[robust]' (it brings torchattacks)"


def torchattacks_module():
    """The torchattacks package, or a UsageError saying how to install it."""
    try:
        import torchattacks
    except ImportError:
        raise UsageError("AutoAttack needs the torchattacks package, which is not installed",
                         hint=INSTALL_HINT) from None
    return torchattacks


def autoattack(model: nn.Module, images: Tensor, labels: Tensor, *, eps: float, norm: str = "linf",
               num_classes: int, version: str = "standard", seed: int = 0) -> Tensor:
    """torchattacks' AutoAttack (APGD-CE, APGD-T, FAB-T, Square): images [B, C, H, W] in [0, 1] -> adversarial."""
    torchattacks = torchattacks_module()
    with eval_mode(model):
        runner = torchattacks.AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, version=version,
                                         n_classes=num_classes, seed=seed)
        return runner(images, labels).detach()


def torchattacks_pgd(model: nn.Module, images: Tensor, labels: Tensor, *, eps: float, step_size: float,
                     steps: int, random_start: bool = True) -> Tensor:
    """torchattacks' own L-inf PGD (the reference our ``pgd`` is checked and timed against)."""
    torchattacks = torchattacks_module()
    with eval_mode(model):
        return torchattacks.PGD(model, eps=eps, alpha=step_size, steps=steps, random_start=random_start)(
            images, labels).detach()
