"""Adversarial attacks any engine may use: PGD (L-inf, L2), FGSM, RoCL's label-free instance-wise
attack, and AutoAttack through the optional extra ``mltk[robust]``.

All take images in [0, 1] and return images in [0, 1] inside the eps-ball of
the clean ones, with the attacked networks in eval mode while attacking.
"""

from mltk.engines.robust.attacks.budget import parse_fraction
from mltk.engines.robust.attacks.classifier import (
           CLASSIFIER_ATTACKS,
           AttackSettings,
           attack,
           fgsm,
           pgd,
)
from mltk.engines.robust.attacks.instance import instance_attack
from mltk.engines.robust.attacks.projected import eval_mode, projected_gradient_ascent

__all__ = ["CLASSIFIER_ATTACKS", "AttackSettings", "attack", "eval_mode", "fgsm", "instance_attack",
           "parse_fraction", "pgd", "projected_gradient_ascent"]
