"""``build_model("vit")`` works from ``mltk.nn`` alone, as every other architecture does."""

from __future__ import annotations

import subprocess
import sys


def test_vit_builds_by_name_without_any_engine_imported():
    # A fresh interpreter: in this one another test may already have imported the engines.
    code = ("import sys; from mltk.nn import arch_names, build_model; "
            "assert 'vit' in arch_names(); "
            "build_model('vit', num_classes=10, in_channels=1, image_size=8); "
            "assert 'mltk.engines' not in sys.modules, 'building a model imported the engines'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
