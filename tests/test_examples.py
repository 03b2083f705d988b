"""The examples keep working."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_python_example_trains_reloads_and_rescores(mltk_env, capsys):
    runpy.run_path(str(EXAMPLES / "train_and_evaluate.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "trained example-digits:1" in out and "reloaded example-digits:1" in out


@pytest.mark.slow
# One epoch: a bar of 0 passes and 1.01 fails whatever accuracy the thread count or BLAS order gives.
@pytest.mark.parametrize("bar,code", [("0", 0), ("1.01", 4)])
def test_ci_pipeline_gates_on_the_threshold(mltk_env, bar, code):
    env = dict(os.environ, EPOCHS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(EXAMPLES / "ci_pipeline.sh"), bar], cwd=mltk_env, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, proc.stderr
    assert "ci-digits:1: accuracy" in proc.stdout
