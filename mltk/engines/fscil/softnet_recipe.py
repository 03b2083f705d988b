"""``mltk train softnet``: few-shot class-incremental learning with soft sub-networks (arXiv 2209.07529).

One run trains the base session and every incremental session (``training.py``);
``method=hardnet|finetune|ncm`` runs the baselines on the same backbone, data
and budget.
"""

from __future__ import annotations

from mltk.core.catalog import register_recipe
from mltk.engines.fscil.config import FscilConfig
from mltk.engines.fscil.training import FscilTraining


@register_recipe("softnet", config=FscilConfig, default_preset="tiny",
                 description="SoftNet few-shot class-incremental learning: base + every session, "
                             "with HardNet, fine-tuning and frozen+NCM baselines (arXiv 2209.07529)")
class SoftnetRecipe(FscilTraining):
    pass
