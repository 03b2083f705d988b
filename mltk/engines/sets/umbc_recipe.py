"""``mltk train umbc``: universally mini-batch-consistent set encoders (arXiv 2208.12401) and their baselines.

``model.kind`` = umbc (extractor -> slot set encoder -> any set function on the slots), sse, deepsets or
set-transformer; ``train.grad_set_size`` trains on large sets with constant memory and an unbiased gradient;
``train.element_dropout`` is set-element dropout (Monte Carlo at test time). Presets: tiny, mog, modelnet.
"""

from __future__ import annotations

from mltk.core.catalog import register_recipe
from mltk.engines.sets.config import UmbcConfig
from mltk.engines.sets.training import SetTraining


@register_recipe("umbc", config=UmbcConfig, default_preset="tiny",
                 description="UMBC: mini-batch-consistent set encoders with unbiased large-set gradients "
                             "(arXiv 2208.12401)")
class UmbcRecipe(SetTraining):
    pass
