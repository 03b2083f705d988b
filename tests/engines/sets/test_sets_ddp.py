"""Two gloo ranks with half the sets each train the same parameters as one process with all of them (learned
slots, full gradients, no element dropout: with those, every draw of a step is the global batch's)."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

RUN = ["train.steps=3", "train.batch_size=4", "data.test_sets=2", "data.test_sizes=[8]", "model.hidden=16",
       "model.heads=2", "model.slot_type=learned", "train.grad_set_size=0", "seed=3"]


@pytest.mark.slow
def test_two_ranks_match_one_process(cli_process, mltk_env):
    single = cli_process("train", "umbc", *RUN, "name=single", "--format", "json", timeout=180)
    assert single.code == 0, single.stderr
    ddp = cli_process("train", "umbc", *RUN, "name=ddp", "--nproc-per-node", "2", "--format", "json", timeout=240)
    assert ddp.code == 0, ddp.stderr
    assert ddp.json()["world_size"] == 2
    home = mltk_env / "home" / "artifacts"
    one = load_file(home / "single" / "1" / "model.safetensors")
    two = load_file(home / "ddp" / "1" / "model.safetensors")
    assert one.keys() == two.keys()
    # Directions the loss is invariant to (softmax attention key biases; the mixture logits' common bias) get a
    # gradient that is zero but for round-off, which Adam's normalisation turns into steps of size lr: the
    # weight matrices and the outputs are compared instead.
    for key in (k for k in one if k.endswith(".weight")):
        assert (one[key] - two[key]).abs().max().item() <= 1e-6, key
    assert abs(single.json()["metrics"]["test_nll"] - ddp.json()["metrics"]["test_nll"]) <= 1e-5
