"""Set encoders that stream: UMBC, universally mini-batch-consistent set encoding (arXiv 2208.12401).

The slot set encoder (``slots``) pools a set of any size into K slots through running sums, so any
partition of the set in any order gives the same slots; UMBC (``model``) puts any set function
(``set_functions``: SAB, ISAB, PMA; DeepSets pooling; an MLP) on those slots. Baselines in the same
class: the slot set encoder alone, DeepSets and the plain Set Transformer. Large sets train with
constant memory and an unbiased gradient (``SetModel.subset_gradient_encoding``). Data: ModelNet meshes,
voxel grids, point arrays and Gaussian mixtures (``data``); scores (``evaluation``); the ``umbc`` recipe
(``training``), ``set-model`` artifacts (``artifact``) and the ``mbc`` / ``calibration`` protocols.
See docs/sets.md.
"""

from mltk.engines.sets import protocols, umbc_recipe  # noqa: F401  (registers them)
from mltk.engines.sets.artifact import LoadedSetModel, load_set_model
from mltk.engines.sets.config import UmbcConfig
from mltk.engines.sets.data import (
    PointClouds,
    load_point_clouds,
    mixture_nll,
    parse_off,
    read_off,
    sample_mixtures,
    sample_surface,
)
from mltk.engines.sets.evaluation import (
    consistency_gap,
    expected_calibration_error,
    peak_tensor_bytes,
)
from mltk.engines.sets.inputs import BadSetError, chunks_of, drop_elements, random_partition
from mltk.engines.sets.model import SetModel, SetModelSpec
from mltk.engines.sets.set_functions import ISAB, MAB, PMA, SAB
from mltk.engines.sets.slots import ACTIVATIONS, PartialSums, SlotSetEncoder

__all__ = [
    "ACTIVATIONS", "BadSetError", "ISAB", "LoadedSetModel", "MAB", "PMA", "PartialSums", "PointClouds", "SAB",
    "SetModel", "SetModelSpec", "SlotSetEncoder", "UmbcConfig", "chunks_of", "consistency_gap", "drop_elements",
    "expected_calibration_error", "load_point_clouds", "load_set_model", "mixture_nll", "parse_off",
    "peak_tensor_bytes", "random_partition", "read_off", "sample_mixtures", "sample_surface",
]
