"""Data parallelism: 2 gloo ranks with batch B/2 each equal one process with batch B; only rank 0 writes."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

# BatchNorm-free ConvNet (instance norm is per sample), so the ranks' halves are exactly the global batch.
RUN = ["model.options.width=16", "model.options.depth=2", "train.batch_size=32", "train.max_steps=6",
       "optim.lr=0.1", "seed=5"]


@pytest.mark.slow
def test_two_ranks_match_one_process_and_only_rank0_writes(cli_process, mltk_env):
    single = cli_process("train", "supervised", *RUN, "name=single", "--format", "json", timeout=180)
    assert single.code == 0, single.stderr
    ddp = cli_process("train", "supervised", *RUN, "name=ddp", "--nproc-per-node", "2", "--format", "json",
                      timeout=240)
    assert ddp.code == 0, ddp.stderr
    result = ddp.json()  # one JSON document: rank 1 printed nothing
    assert result["world_size"] == 2 and result["artifact"] == "ddp:1"

    home = mltk_env / "home" / "artifacts"
    one = load_file(home / "single" / "1" / "model.safetensors")
    two = load_file(home / "ddp" / "1" / "model.safetensors")
    assert one.keys() == two.keys()
    for key in one:
        assert (one[key] - two[key]).abs().max().item() <= 1e-6, key

    runs = [p for p in (mltk_env / "runs" / "supervised").iterdir() if p.name.endswith("-ddp")]
    assert len(runs) == 1  # rank 1 created no run folder
    lines = (runs[0] / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [6]
    assert [p.name for p in (runs[0] / "ckpt").iterdir()] == ["step-6"]
    assert sorted(p.name for p in home.iterdir()) == ["ddp", "single"]
    assert sorted(p.name for p in (home / "ddp").iterdir()) == ["1"]
    # The test metrics are computed on shards and summed across ranks: same figures as one process.
    assert result["metrics"]["test_images"] == 360
    assert abs(result["metrics"]["test_accuracy"] - single.json()["metrics"]["test_accuracy"]) <= 1 / 360


def test_batch_must_split_over_ranks(cli_process):
    result = cli_process("train", "supervised", "train.batch_size=33", "train.max_steps=1", "--nproc-per-node", "2",
                         timeout=180)
    assert result.code == 2
    assert "does not split evenly over 2 ranks" in result.stderr
