"""The detox step loop resumes bit-identically: a run continued from its step-3 checkpoint ends with the same
weights as the run that went straight through."""

from __future__ import annotations

import pytest
import torch

from mltk.core.registry import Registry
from mltk.core.tensor_files import load_safetensors


@pytest.mark.slow
def test_resuming_from_a_checkpoint_ends_bit_identical(cli, detox_files, mltk_env):
    args = ["train", "adlm", f"lm={detox_files['lm']}", f"data=labelled:{detox_files['labelled']}",
            "name=resumed", "train.steps=6", "train.ckpt_every=3", "train.keep_checkpoints=3", "train.batch_size=4",
            "train.seq_len=16", "adlm.fisher_sequences=2", "--format", "json"]
    straight = cli(*args)
    assert straight.code == 0, straight.stderr
    run_dir = straight.json()["run_dir"]
    resumed = cli(*args, "--resume", f"{run_dir}/ckpt/step-3")
    assert resumed.code == 0, resumed.stderr
    assert "resuming" in resumed.stderr and resumed.json()["resumed_from"].endswith("step-3")
    registry = Registry()
    first, second = (load_safetensors(registry.resolve(f"resumed:{v}").file("adlm.safetensors"))[0] for v in (1, 2))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert straight.json()["metrics"] == resumed.json()["metrics"]
