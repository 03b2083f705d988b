"""Each MIM recipe resumed from a mid-run checkpoint ends bit-identical to the uninterrupted run (CPU);
sdft from a checkpoint in either stage."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from mltk.core.run_recipe import RunContext

TINY = ["model.options.width=32", "model.options.depth=2", "model.options.heads=2", "model.decoder.width=16",
        "model.decoder.depth=1", "model.decoder.heads=2", "train.batch_size=32", "eval.knn_train_images=0",
        "eval.test_images=50", "seed=4"]


def _files(home: Path, ref: str) -> dict[str, dict]:
    name, version = ref.split(":")
    folder = home / "artifacts" / name / version
    return {path.name: load_file(path) for path in sorted(folder.glob("*.safetensors"))}


def _assert_identical(first: dict[str, dict], second: dict[str, dict]) -> None:
    assert first.keys() == second.keys() and first
    for filename, tensors in first.items():
        other = second[filename]
        assert tensors.keys() == other.keys()
        for key, value in tensors.items():
            assert value.dtype == other[key].dtype and bool((value == other[key]).all()), f"{filename}: {key}"


def _train(cli, *args: str) -> dict:
    result = cli("train", *args, "--format", "json")
    assert result.code == 0, result.stderr
    return result.json()


@pytest.mark.parametrize("recipe", ["mae", "rc-mae"])
def test_resume_from_a_mid_run_checkpoint_is_bit_identical(cli, mltk_env, recipe):
    args = [recipe, *TINY, "train.max_steps=6", "train.ckpt_every=3", "train.keep_checkpoints=5"]
    whole = _train(cli, *args)
    checkpoint = Path(whole["run_dir"]) / "ckpt" / "step-3"
    resumed = _train(cli, *args, "--resume", str(checkpoint))
    assert resumed["resumed_from"] == str(checkpoint) and resumed["artifact"].endswith(":2")
    home = mltk_env / "home"
    _assert_identical(_files(home, whole["artifact"]), _files(home, resumed["artifact"]))
    assert resumed["metrics"]["test_recon_loss"] == whole["metrics"]["test_recon_loss"]


def test_sdft_resumes_bit_identically_from_either_stage(cli, mltk_env):
    init = _train(cli, "mae", *TINY, "train.max_steps=2")["artifact"]
    args = ["sdft", f"init={init}", "train.batch_size=32", "train.steps=3", "train.distill_steps=3",
            "train.ckpt_every=2", "train.keep_checkpoints=10", "eval.knn_train_images=0", "eval.test_images=50",
            "seed=4"]
    whole = _train(cli, *args)
    ckpts = sorted(int(p.name.split("-")[1]) for p in (Path(whole["run_dir"]) / "ckpt").glob("step-*"))
    assert ckpts == [2, 3, 4, 6]  # every 2 steps, and at the end of each stage
    home = mltk_env / "home"
    expected_student = _files(home, whole["artifact"])
    expected_teacher = _files(home, whole["artifact"].replace("sdft-digits", "sdft-digits-teacher"))
    for step, version in ((2, 2), (4, 3)):  # stage 1 (further pre-training), stage 2 (self-distillation)
        resumed = _train(cli, *args, "--resume", str(Path(whole["run_dir"]) / "ckpt" / f"step-{step}"))
        assert resumed["artifact"] == f"sdft-digits:{version}"
        _assert_identical(expected_student, _files(home, resumed["artifact"]))
        _assert_identical(expected_teacher, _files(home, f"sdft-digits-teacher:{version}"))


def test_a_stop_request_checkpoints_exits_130_and_resumes_identically(cli, mltk_env, monkeypatch):
    args = ["rc-mae", *TINY, "train.max_steps=5", "name=stopped"]
    whole = _train(cli, "rc-mae", *TINY, "train.max_steps=5", "name=whole")
    calls = {"n": 0}

    def stop_before_step_2(self):
        calls["n"] += 1
        return calls["n"] == 3  # asked once per step, before it runs

    with monkeypatch.context() as patch:
        patch.setattr(RunContext, "should_stop", stop_before_step_2)
        stopped = cli("train", *args)
    assert stopped.code == 130 and "checkpoint written" in stopped.stderr
    (run,) = (mltk_env / "runs" / "rc-mae").glob("*-stopped")
    assert [p.name for p in (run / "ckpt").iterdir()] == ["step-2"]
    resumed = _train(cli, *args, "--resume", "auto")
    assert resumed["resumed_from"] == str(run / "ckpt" / "step-2")
    home = mltk_env / "home"
    _assert_identical(_files(home, whole["artifact"]), _files(home, resumed["artifact"]))
