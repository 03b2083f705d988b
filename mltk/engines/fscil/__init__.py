"""Few-shot class-incremental learning (FSCIL) with SoftNet soft sub-networks (arXiv 2209.07529).

Masked conv and linear layers with learnable scores (``masked_layers``), the
masked CIFAR ResNet with its prototype table (``network``), session plans
from the CEC/TOPIC index lists or generated (``sessions``), cosine
nearest-class-mean and the prototype loss (``prototypes``), the session
mechanics (``sessions_runner``), the ``softnet`` recipe on the shared loop
(``training``), ``fscil-network`` artifacts (``artifact``) and
``--protocol fscil`` (``protocols``). See docs/fscil.md.
"""

from mltk.engines.fscil import protocols, softnet_recipe  # noqa: F401  (registers them)
from mltk.engines.fscil.artifact import LoadedFscil, load_fscil
from mltk.engines.fscil.config import FscilConfig
from mltk.engines.fscil.masked_layers import (
    MaskedConv2d,
    MaskedLinear,
    major_count,
    major_indicator,
)
from mltk.engines.fscil.network import FscilNetwork, NetworkSpec
from mltk.engines.fscil.prototypes import class_prototypes, cosine_ncm, prototype_loss
from mltk.engines.fscil.sessions import SessionPlan, generate_plan, read_index_lists
from mltk.engines.fscil.sessions_runner import SessionRunner, load_fscil_data, summarize

__all__ = [
    "FscilConfig",
    "FscilNetwork",
    "LoadedFscil",
    "MaskedConv2d",
    "MaskedLinear",
    "NetworkSpec",
    "SessionPlan",
    "SessionRunner",
    "class_prototypes",
    "cosine_ncm",
    "generate_plan",
    "load_fscil",
    "load_fscil_data",
    "major_count",
    "major_indicator",
    "prototype_loss",
    "read_index_lists",
    "summarize",
]
