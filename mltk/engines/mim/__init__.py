"""Masked image modelling: the ``mae``, ``rc-mae`` and ``sdft`` recipes and the
``linear-probe``, ``knn`` and ``finetune`` protocols for the encoders they make."""

from mltk.engines.mim import protocols  # noqa: F401  (registers the evaluation protocols)
from mltk.engines.mim.config import MAEConfig, RCMAEConfig, SDFTConfig
from mltk.engines.mim.mae_recipe import MAERecipe
from mltk.engines.mim.rc_mae_recipe import RCMAERecipe
from mltk.engines.mim.sdft_recipe import SelfDistillRecipe

__all__ = ["MAEConfig", "MAERecipe", "RCMAEConfig", "RCMAERecipe", "SDFTConfig", "SelfDistillRecipe"]
