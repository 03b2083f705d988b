"""RoCL's label-free instance-wise attack: perturb one view to break its match with another view.

    delta = argmax_{||delta|| <= eps} NT-Xent( embed(x1 + delta), embed_other(x2) )

``embed`` maps images in [0, 1] to projections [B, D]; ``embed_other`` may be a
different network (MAVRL attacks each view against its own adapted encoder,
the other view seen through the other one). No labels are used: an instance's
only "label" is its own other view. The target projections are computed once,
without gradients. Both networks run in eval mode while attacking.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from mltk.engines.robust.attacks.projected import eval_mode, projected_gradient_ascent
from mltk.engines.robust.contrastive import nt_xent_per_pair


def instance_attack(embed: Callable[[Tensor], Tensor], view: Tensor, other_view: Tensor, *, eps: float,
                    step_size: float, steps: int, norm: str = "linf", temperature: float = 0.5,
                    random_start: bool = True, embed_other: Callable[[Tensor], Tensor] | None = None,
                    modules: tuple[nn.Module, ...] = (), generator: torch.Generator | None = None) -> Tensor:
    """view, other_view float [B, C, H, W] in [0, 1] -> adversarial ``view`` [B, C, H, W].

    ``modules``: the networks behind ``embed``/``embed_other``, put in eval mode while attacking.
    """
    embed_other = embed_other or embed
    with contextlib.ExitStack() as stack:
        for module in modules:
            stack.enter_context(eval_mode(module))
        with torch.no_grad():
            target = embed_other(other_view).detach()
        return projected_gradient_ascent(lambda x: nt_xent_per_pair(embed(x), target, temperature), view,
                                         eps=eps, step_size=step_size, steps=steps, norm=norm, start=random_start,
                                         generator=generator)

