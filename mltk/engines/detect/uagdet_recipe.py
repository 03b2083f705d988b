"""``mltk train uagdet``: the oriented detector with UAGDet's uncertainty-aware graph refinement.

The base detector of ``oriented-rcnn`` plus the ``graph`` section
(``uagdet.py``): uncertain RoIs are refined from certain neighbours and
weighted ``1 + beta * u`` in the loss. ``graph.refine=all`` is the
refine-everything ablation, ``graph.refine=none`` the base head alone, and
``graph.uncertainty=mc-dropout`` the other uncertainty source.
"""

from __future__ import annotations

from mltk.core.catalog import register_recipe
from mltk.engines.detect.config import UagdetConfig
from mltk.engines.detect.training import DetectorTraining


@register_recipe("uagdet", config=UagdetConfig, default_preset="tiny",
                 description="UAGDet: oriented detection with uncertainty-aware graph refinement (arXiv 2208.10781)")
class UagdetRecipe(DetectorTraining):
    pass
