"""Supervised image classification: the ``supervised`` recipe and the ``accuracy`` protocol."""

from mltk.engines.supervised.config import SupervisedConfig
from mltk.engines.supervised.protocols import accuracy_protocol
from mltk.engines.supervised.recipe import SupervisedRecipe

__all__ = ["SupervisedConfig", "SupervisedRecipe", "accuracy_protocol"]
