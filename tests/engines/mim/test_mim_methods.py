"""The defining properties of RC-MAE and self-distillation, checked on the real recipes (tiny ViTs on digits)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mltk.core import config
from mltk.core.catalog import get_recipe, preset_path
from mltk.core.console import Reporter
from mltk.core.distributed import DistInfo
from mltk.core.registry import Registry
from mltk.core.run_recipe import RunContext
from mltk.core.runs import RunDir
from mltk.engines.mim.schedules import ema_momentum
from mltk.nn.encoders.mae import MaskedAutoencoder

TINY = ["model.options.width=32", "model.options.depth=2", "model.options.heads=2", "model.decoder.width=16",
        "model.decoder.depth=1", "model.decoder.heads=2", "train.batch_size=32", "train.max_steps=3",
        "eval.knn_train_images=200", "eval.test_images=100", "seed=3"]


def make_recipe(name: str, overrides: list[str], tmp_path: Path, registry: Registry | None = None):
    entry = get_recipe(name)
    cfg = config.resolve(entry.config_class, preset=preset_path(name, entry.default_preset),
                         overrides=[*overrides, "device=cpu"])
    run = RunDir.create(tmp_path / "runs", name, "test", config_yaml=config.to_yaml(cfg), config_hash="")
    ctx = RunContext(recipe=name, run=run, dist=DistInfo(), device=torch.device("cpu"),
                     registry=registry or Registry(tmp_path / "home"), reporter=Reporter("quiet"), resume_from=None)
    recipe = entry.recipe_class(cfg, ctx)
    recipe.setup()
    return recipe


def weights(home: Path, ref: str, filename: str = "model.safetensors") -> dict:
    name, version = ref.split(":")
    return load_file(home / "artifacts" / name / version / filename)


def test_teacher_receives_the_students_permutation(cli, monkeypatch):
    calls = {"student": [], "teacher": []}
    forward, predict = MaskedAutoencoder.forward, MaskedAutoencoder.predict

    def spy_forward(self, x, ids_shuffle):
        calls["student"].append(ids_shuffle.clone())
        return forward(self, x, ids_shuffle)

    def spy_predict(self, x, ids_shuffle):
        calls["teacher"].append(ids_shuffle.clone())
        return predict(self, x, ids_shuffle)

    monkeypatch.setattr(MaskedAutoencoder, "forward", spy_forward)
    monkeypatch.setattr(MaskedAutoencoder, "predict", spy_predict)
    result = cli("train", "rc-mae", *TINY, "eval.knn_train_images=0")
    assert result.code == 0, result.stderr
    student, teacher = calls["student"][:3], calls["teacher"]
    assert len(teacher) == 3  # one teacher forward per training step
    for s, t in zip(student, teacher, strict=True):
        assert torch.equal(s, t)
    assert not torch.equal(student[0], student[1])  # a fresh mask every step


def test_teacher_update_is_the_ema_of_the_updated_student_and_gets_no_gradient(tmp_path):
    recipe = make_recipe("rc-mae", [*TINY, "train.max_steps=1", "teacher.momentum=0.9",
                                    "teacher.momentum_schedule=constant"], tmp_path)
    before = [p.detach().clone() for p in recipe.teacher.parameters()]
    assert all(torch.equal(t, s) for t, s in zip(before, recipe.student.parameters(), strict=True))
    recipe.train()
    for old, new, student in zip(before, recipe.teacher.parameters(), recipe.student.parameters(), strict=True):
        assert new.grad is None and not new.requires_grad
        assert torch.allclose(new, 0.9 * old + 0.1 * student.detach(), atol=1e-7, rtol=0)
    assert any(not torch.equal(old, new) for old, new in zip(before, recipe.teacher.parameters(), strict=True))


def test_rc_mae_with_gamma_zero_trains_exactly_the_mae_student(cli, mltk_env):
    mae = cli("train", "mae", *TINY, "eval.knn_train_images=0", "--format", "json")
    rc = cli("train", "rc-mae", *TINY, "eval.knn_train_images=0", "teacher.gamma=0",
             "teacher.downstream=student", "--format", "json")
    assert mae.code == 0 and rc.code == 0, mae.stderr + rc.stderr
    home = mltk_env / "home"
    plain, student = weights(home, mae.json()["artifact"]), weights(home, rc.json()["artifact"])
    assert plain.keys() == student.keys()
    assert all(torch.equal(plain[k], student[k]) for k in plain)
    teacher = weights(home, rc.json()["artifact"], "teacher.safetensors")
    assert any(not torch.equal(plain[k], teacher[k]) for k in plain)  # the teacher lags behind


def test_momentum_schedule_runs_over_global_steps_and_constant_reproduces_the_official_code():
    total = 1000  # e.g. 10 epochs of 100 steps
    cosine = [ema_momentum(s, total_steps=total, start=0.996, end=1.0, schedule="cosine") for s in range(total)]
    assert cosine[0] == 0.996 and abs(cosine[-1] - 1.0) < 1e-7
    assert all(b >= a for a, b in zip(cosine, cosine[1:], strict=False))
    assert cosine[150] > cosine[50]  # step 50 of epoch 2 is past step 50 of epoch 1: no per-epoch restart
    official = [0.996 + 0.004 * 0.5 * (1 - math.cos(math.pi * (s % 100) / total)) for s in range(total)]
    constant = [ema_momentum(s, total_steps=total, start=0.996, end=1.0, schedule="constant") for s in range(total)]
    assert max(abs(a - b) for a, b in zip(official, constant, strict=True)) < 1e-4


# The train loss of the first three steps of `mltk train rc-mae` with TINY and seed 3 (CPU, float32).
GOLDEN_RC_MAE = [1.027089, 1.009003, 0.969924]


def test_three_step_golden_losses(cli, mltk_env):
    result = cli("train", "rc-mae", *TINY, "eval.knn_train_images=0", "train.log_every=1", "--format", "json")
    assert result.code == 0, result.stderr
    run = Path(result.json()["run_dir"])
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    losses = [line["train_loss"] for line in lines]
    assert losses == pytest.approx(GOLDEN_RC_MAE, rel=1e-4)
    for line in lines:  # the total is mae + gamma * consistency, gamma = 1
        assert line["train_loss"] == pytest.approx(line["train_mae"] + line["train_consistency"], rel=1e-6)
    momenta = [line["momentum"] for line in lines]  # cosine over the run's 3 global steps
    assert momenta[0] == 0.996 and momenta[0] < momenta[1] < momenta[2] < 1.0


def test_self_distillation_restarts_the_student_from_the_initial_model(cli, tmp_path, mltk_env):
    init = cli("train", "mae", *TINY, "eval.knn_train_images=0", "--format", "quiet").stdout.strip()
    recipe = make_recipe("sdft", [f"init={init}", "train.batch_size=32", "train.steps=2", "train.distill_steps=1",
                                  "eval.knn_train_images=0", "eval.test_images=50"], tmp_path,
                         registry=Registry())
    seen = {}
    enter_stage = recipe.enter_stage

    def spy(index):
        further_pretrained = [p.detach().clone() for p in recipe.student.parameters()]
        enter_stage(index)
        seen["teacher_is_stage1"] = all(torch.equal(a, b) for a, b in
                                        zip(further_pretrained, recipe.teacher.parameters(), strict=True))
        seen["student_is_init"] = all(torch.equal(a, b) for a, b in
                                      zip(recipe.initial.parameters(), recipe.student.parameters(), strict=True))
        seen["stage1_moved"] = any(not torch.equal(a, b) for a, b in
                                   zip(recipe.initial.parameters(), further_pretrained, strict=True))

    recipe.enter_stage = spy
    recipe.train()
    assert seen == {"teacher_is_stage1": True, "student_is_init": True, "stage1_moved": True}
    assert all(not p.requires_grad for p in recipe.teacher.parameters())
    metrics = recipe.evaluate()
    assert metrics["teacher_distance_from_init"] > 0 and metrics["student_distance_from_init"] > 0
