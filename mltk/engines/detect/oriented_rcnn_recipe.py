"""``mltk train oriented-rcnn``: the base two-stage oriented detector alone (UAGDet's baseline).

The same detector, data, schedule and seeds as ``uagdet``, with the graph
refinement left out; see ``training.py`` for the step and ``model.py`` for
the detector.
"""

from __future__ import annotations

from mltk.core.catalog import register_recipe
from mltk.engines.detect.config import OrientedRcnnConfig
from mltk.engines.detect.training import DetectorTraining


@register_recipe("oriented-rcnn", config=OrientedRcnnConfig, default_preset="tiny",
                 description="two-stage oriented detector (Oriented R-CNN family) on DOTA-format folders")
class OrientedRcnnRecipe(DetectorTraining):
    pass
