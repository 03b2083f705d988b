"""1-bit and low-bit quantization of image classifiers: BiTAT (arXiv 2207.01394), XNOR-Net, ReActNet, uniform.

Importing this package registers the loaders of the ``binarized-classifier``
and ``quantized-classifier`` artifact kinds, so ``mltk eval`` runs quantized
artifacts in their deployed form.
"""

from mltk.engines.quantize.api import quantize, quantize_presets, resolve_config
from mltk.engines.quantize.artifact import KIND_BINARY, KIND_QUANTIZED, load_quantized
from mltk.engines.quantize.config import QuantizeConfig
from mltk.engines.quantize.packing import pack_signs, unpack_signs
from mltk.engines.quantize.recipe import RECIPE_NAME, QuantizeRecipe

__all__ = [
    "KIND_BINARY",
    "KIND_QUANTIZED",
    "QuantizeConfig",
    "QuantizeRecipe",
    "RECIPE_NAME",
    "load_quantized",
    "pack_signs",
    "quantize",
    "quantize_presets",
    "resolve_config",
    "unpack_signs",
]
