"""Dataset condensation: KFS (latent codes + shared tiny decoders) and the DM, random and herding baselines.

``mltk condense DATASET --ipc N`` runs the ``condense`` recipe and stores a
``condensed-dataset`` artifact; ``mltk eval REF --protocol condensed`` trains
fresh ConvNets on it. The method follows the KFS abstract and the brief
(../shared/papers/briefs-b.md §1); the paper's method section could not be
read, so the decoder shape, the latent size, the warm start and the optional
diversity term are our interpretation, each a config key (``kfs.*``).
"""

from mltk.engines.condense.artifact import CondensedSet, export_condensed, load_condensed
from mltk.engines.condense.config import CondenseConfig
from mltk.engines.condense.protocols import condensed_protocol, evaluate_condensed
from mltk.engines.condense.recipe import CondenseRecipe
from mltk.engines.condense.storage import StorageReport, budget_floats, kfs_layout

__all__ = ["CondenseConfig", "CondenseRecipe", "CondensedSet", "StorageReport", "budget_floats",
           "condensed_protocol", "evaluate_condensed", "export_condensed", "kfs_layout", "load_condensed"]
