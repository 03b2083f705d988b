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
def test_ci_pipeline_trains_reports_and_fails_the_job_below_the_bar(mltk_env):
    # One epoch: a bar of 1.01 fails whatever accuracy the thread count or BLAS order gives. Every step before
    # the gate must have succeeded for the script to reach it (set -e); a bar that passes is `mltk eval --min`'s
    # own test (tests/cli/test_cli_train_eval.py).
    env = dict(os.environ, EPOCHS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(EXAMPLES / "ci_pipeline.sh"), "1.01"], cwd=mltk_env, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout.startswith("ci-digits:1: accuracy")  # data only on stdout
    assert "trained ci-digits:1" in proc.stderr
