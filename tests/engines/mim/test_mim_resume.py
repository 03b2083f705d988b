"""sdft resumed from a checkpoint in either of its stages ends bit-identical to the uninterrupted run (CPU),
its teacher too (tests/engines/test_every_recipe.py checks every recipe's main artifact from one stop)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

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
