"""Processes: 2 gloo ranks condense as one process does; Ctrl-C checkpoints, exits 130 and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

RUN = ["digits", "--ipc", "1", "model.options.width=16", "match.batch_real=32", "match.iterations=8",
       "kfs.warmup_steps=4", "eval.runs=2", "eval.epochs=5", "--format", "json"]


@pytest.mark.slow
def test_two_ranks_match_one_process(cli_process, mltk_env):
    single = cli_process("condense", *RUN, "name=single", timeout=240)
    assert single.code == 0, single.stderr
    ddp = cli_process("condense", *RUN, "name=ddp", "--nproc-per-node", "2", timeout=300)
    assert ddp.code == 0, ddp.stderr
    result = ddp.json()  # one JSON document: rank 1 printed nothing
    assert result["world_size"] == 2 and result["artifact"] == "ddp:1"

    home = mltk_env / "home" / "artifacts"
    one = load_file(home / "single" / "1" / "condensed.safetensors")
    two = load_file(home / "ddp" / "1" / "condensed.safetensors")
    for key in one:
        # The per-class real sums are added across ranks: equal up to float summation order.
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=1e-4), key
    # The evaluation runs are dealt out over the ranks and gathered.
    assert result["metrics"]["eval_runs"] == 2
    assert abs(result["metrics"]["test_accuracy"] - single.json()["metrics"]["test_accuracy"]) <= 2 / 360


@pytest.mark.slow
def test_ctrl_c_writes_a_checkpoint_exits_130_and_the_run_resumes(cli_process, mltk_env):
    base = ["condense", "digits", "--ipc", "1", "model.options.width=16", "match.batch_real=32",
            "train.ckpt_every=5", "kfs.warmup_steps=2", "eval.runs=0", "name=stopped"]
    proc = subprocess.Popen([sys.executable, "-m", "mltk", *base, "match.iterations=100000"], cwd=mltk_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    runs = mltk_env / "runs" / "condense"
    try:
        deadline = time.monotonic() + 120
        while not list(runs.glob("*-stopped/ckpt/step-*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "checkpoint written" in stderr and "--resume" in stderr
    (run,) = runs.iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    stopped_at = max(int(p.name.split("-")[1]) for p in (run / "ckpt").glob("step-*"))
    # Resume the interrupted run, now told to end 3 steps (2 warm-up + 1) after it: it continues from its checkpoint.
    resumed = cli_process(*base, f"match.iterations={stopped_at + 1}", "--resume", str(run), "--format", "json")
    assert resumed.code == 0, resumed.stderr
    assert resumed.json()["resumed_from"].endswith(f"step-{stopped_at}")
