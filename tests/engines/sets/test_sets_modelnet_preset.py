"""The modelnet preset's model must let different point clouds reach the head as different slots at init.

Centred unit-ball clouds have close attention-weighted means, so the pooled part of each slot varies little
from cloud to cloud. With the slot residual on, the set-independent queries (several times larger) are
added before the LayerNorm and drown that variation; the model then learnt near-constant predictions on the
ModelNet40 subset (benchmarks/results/sets.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

import mltk
from mltk.engines.sets.data import normalise_cloud
from mltk.engines.sets.model import SetModel, SetModelSpec

PRESET = Path(mltk.__file__).parent / "presets" / "umbc" / "modelnet.yaml"


def _distinct_clouds(points: int = 256, seed: int = 0) -> torch.Tensor:
    """Six clearly different shapes (sphere, cube, disc, rod, box, ellipsoid), each centred in the unit ball."""
    rng = np.random.default_rng(seed)
    normal = rng.normal(size=(points, 3))
    sphere = normal / np.linalg.norm(normal, axis=1, keepdims=True)
    cube = rng.uniform(-1, 1, (points, 3))
    cube[np.arange(points), rng.integers(0, 3, points)] = rng.choice([-1.0, 1.0], points)
    shapes = (sphere, cube, sphere * [1, 1, 0.05], sphere * [0.1, 0.1, 1], cube * [1, 0.3, 0.6], sphere * [1, 0.5, 0.25])
    return torch.tensor(np.stack([normalise_cloud(s) for s in shapes]), dtype=torch.float32)


def test_modelnet_preset_encodes_different_clouds_differently_at_init():
    model_section = yaml.safe_load(PRESET.read_text())["model"]
    for seed in range(3):
        torch.manual_seed(seed)
        model = SetModel(SetModelSpec(**model_section, dim_in=3, out_features=39)).eval()
        with torch.no_grad():
            slots = model.encode(_distinct_clouds(seed=seed))  # (6, K, hidden), unit scale per slot (LayerNorm)
        spread = slots.std(0).mean().item()
        # measured: 0.007-0.008 with the slot residual, 0.045-0.059 without
        assert spread > 0.025, f"seed {seed}: slots differ by {spread:.4f} across shapes (residual drowns the set)"
