"""Adversarial robustness: attacks for every classifier (``--protocol robust``), and adversarial
meta-learning with bilevel attacks and multi-view consistency (MAVRL, arXiv 2210.10485) with its
baselines (``train mavrl``, ``--protocol fewshot``). Importing it registers all three."""

from mltk.engines.robust import fewshot_protocol, mavrl_recipe, robust_protocol  # noqa: F401
