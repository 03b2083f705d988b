"""Data parallelism: 2 gloo ranks with half the batch each train what one process trains with the whole
batch (same masks, same crops, same EMA teacher), for RC-MAE and both stages of sdft; only rank 0 writes."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

TINY = ["model.options.width=32", "model.options.depth=2", "model.options.heads=2", "model.decoder.width=16",
        "model.decoder.depth=1", "model.decoder.heads=2", "train.batch_size=32", "eval.knn_train_images=100",
        "eval.test_images=60", "seed=5"]
# AdamW divides by the root of the second moment, so reduction-order noise in small gradients can grow;
# 1e-4 is far below what a wrong batch split or a different mask would give.
TOLERANCE = 1e-4


def _comparable(key: str, tensor):
    """The tensor without the key bias: softmax ignores it, so its gradient is exactly zero in theory and
    pure rounding noise in practice, which Adam turns into learning-rate-sized steps of random sign."""
    if key.endswith("attn.qkv.bias"):
        width = tensor.shape[0] // 3
        return tensor[list(range(width)) + list(range(2 * width, 3 * width))]
    return tensor


def _compare(home, single: str, ddp: str, filename: str = "model.safetensors") -> None:
    one = load_file(home / "artifacts" / single / "1" / filename)
    two = load_file(home / "artifacts" / ddp / "1" / filename)
    assert one.keys() == two.keys()
    worst, key = max(((_comparable(k, one[k]) - _comparable(k, two[k])).abs().max().item(), k) for k in one)
    assert worst <= TOLERANCE, f"{filename}: {key} differs by {worst}"


@pytest.mark.slow
def test_two_ranks_match_one_process(cli, cli_process, mltk_env):
    home = mltk_env / "home"
    runs = {}
    for name, run in (("single", cli), ("ddp", lambda *a: cli_process(*a, "--nproc-per-node", "2", timeout=300))):
        result = run("train", "rc-mae", *TINY, "train.max_steps=4", f"name=rc-{name}", "--format", "json")
        assert result.code == 0, result.stderr
        runs[name] = result.json()
    assert runs["ddp"]["world_size"] == 2 and runs["ddp"]["artifact"] == "rc-ddp:1"
    _compare(home, "rc-single", "rc-ddp", "model.safetensors")  # the EMA teacher
    _compare(home, "rc-single", "rc-ddp", "student.safetensors")
    assert abs(runs["ddp"]["metrics"]["knn_accuracy"] - runs["single"]["metrics"]["knn_accuracy"]) <= 1 / 60

    sdft = ["train.batch_size=32", "train.steps=2", "train.distill_steps=2", "eval.knn_train_images=0",
            "eval.test_images=60", "seed=5", "init=rc-single"]
    for name, run in (("single", cli), ("ddp", lambda *a: cli_process(*a, "--nproc-per-node", "2", timeout=300))):
        result = run("train", "sdft", *sdft, f"name=sd-{name}", "--format", "json")
        assert result.code == 0, result.stderr
    _compare(home, "sd-single", "sd-ddp")
    _compare(home, "sd-single-teacher", "sd-ddp-teacher")
    assert sorted(p.name for p in (home / "artifacts" / "sd-ddp").iterdir()) == ["1"]  # rank 1 saved nothing
