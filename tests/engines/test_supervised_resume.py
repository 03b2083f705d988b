"""Resume: a run killed (SIGKILL) or stopped (Ctrl-C) mid-training and resumed ends with the
bit-identical weights of an uninterrupted run (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

# 44 steps per epoch; 4 epochs = 176 steps, a checkpoint every 8 steps.
RUN = ["model.options.width=16", "model.options.depth=2", "train.batch_size=32", "train.epochs=4",
       "train.ckpt_every=8", "optim.lr=0.1", "seed=3"]


def _weights(home: Path, ref: str) -> dict:
    name, version = ref.split(":")
    return load_file(home / "artifacts" / name / version / "model.safetensors")


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and bool((a[key] == b[key]).all()), f"{key} differs"


def _spawn(mltk_env: Path, args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "mltk", *args], cwd=mltk_env, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(proc: subprocess.Popen, runs: Path, name: str, min_step: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [int(p.name.split("-")[1]) for p in runs.glob(f"*-{name}/ckpt/step-*")]
        if steps and max(steps) >= min_step:
            return max(steps)
        assert proc.poll() is None, f"training ended before a checkpoint: {proc.communicate()}"
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared in time")


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(cli_process, mltk_env):
    reference = cli_process("train", "supervised", *RUN, "name=reference", "--format", "json")
    assert reference.code == 0, reference.stderr
    expected = _weights(mltk_env / "home", reference.json()["artifact"])

    proc = _spawn(mltk_env, ["train", "supervised", *RUN, "name=killed", "--format", "json"])
    try:
        _wait_for_checkpoint(proc, mltk_env / "runs" / "supervised", "killed", min_step=16)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL  # it really died mid-run
    (killed_run,) = [p for p in (mltk_env / "runs" / "supervised").iterdir() if p.name.endswith("-killed")]
    assert json.loads((killed_run / "run.json").read_text())["status"] == "running"

    resumed = cli_process("train", "supervised", *RUN, "name=killed", "--resume", "auto", "--format", "json")
    assert resumed.code == 0, resumed.stderr
    result = resumed.json()
    assert result["resumed_from"] and Path(result["run_dir"]) == killed_run
    _assert_identical(_weights(mltk_env / "home", result["artifact"]), expected)
    epochs = [json.loads(line)["epoch"] for line in (killed_run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]  # lines written after the checkpoint were dropped, none repeated
    assert resumed.json()["metrics"]["test_accuracy"] == reference.json()["metrics"]["test_accuracy"]


@pytest.mark.slow
def test_ctrl_c_writes_checkpoint_exits_130_and_resumes_identically(cli_process, mltk_env):
    reference = cli_process("train", "supervised", *RUN, "name=reference", "--format", "json")
    expected = _weights(mltk_env / "home", reference.json()["artifact"])

    proc = _spawn(mltk_env, ["train", "supervised", *RUN, "name=stopped"])
    try:
        _wait_for_checkpoint(proc, mltk_env / "runs" / "supervised", "stopped", min_step=8)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "checkpoint written" in stderr and "--resume" in stderr
    (run,) = [p for p in (mltk_env / "runs" / "supervised").iterdir() if p.name.endswith("-stopped")]
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    stopped_at = max(int(p.name.split("-")[1]) for p in (run / "ckpt").glob("step-*"))
    assert 8 <= stopped_at < 176

    spent = json.loads((run / "ckpt" / f"step-{stopped_at}" / "clock.json").read_text())["seconds"]

    resumed = cli_process("train", "supervised", *RUN, "name=stopped", "--resume", str(run), "--format", "json")
    assert resumed.code == 0, resumed.stderr
    _assert_identical(_weights(mltk_env / "home", resumed.json()["artifact"]), expected)
    # the reported total counts the interrupted invocation's time up to its checkpoint
    out = resumed.json()
    assert spent > 0 and out["wall_time_total_s"] == pytest.approx(spent + out["wall_time_s"], abs=0.01)


def test_resume_last_without_runs_is_an_error(cli):
    result = cli("train", "supervised", "--resume", "last")
    assert result.code == 2 and "no run of 'supervised'" in result.stderr


def test_resume_auto_with_nothing_to_resume_starts_fresh(cli, tiny):
    result = cli("train", "supervised", *tiny, "--resume", "auto", "--format", "json")
    assert result.code == 0 and result.json()["resumed_from"] is None
