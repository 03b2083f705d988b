"""MAVRL's defining computation and the few-shot plumbing: first-order MAVRL equals a hand-written
two-view computation; tasks depend on the seed only (every method sees the same ones); impossible
tasks are refused naming the class; ``--protocol fewshot`` scores an unseen domain from files."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mltk.core.errors import UsageError
from mltk.engines.robust.config import MavrlConfig
from mltk.engines.robust.contrastive import nt_xent
from mltk.engines.robust.domains import ClassPool
from mltk.engines.robust.episodes import (
    augmented_view,
    check_task_shape,
    sample_task,
    task_generator,
)
from mltk.engines.robust.fewshot_net import FewShotNet
from mltk.engines.robust.mavrl_recipe import MetaLearner
from mltk.engines.robust.meta import TaskLosses


def random_pool(classes: int = 5, per_class: int = 8, size: int = 16) -> ClassPool:
    """A pool of smooth random images: ``per_class`` of each of ``classes`` classes."""
    g = torch.Generator().manual_seed(3)
    images = F.interpolate(torch.rand(classes * per_class, 1, size // 4, size // 4, generator=g), size=(size, size),
                           mode="bilinear", align_corners=False)
    members = [torch.arange(c * per_class, (c + 1) * per_class) for c in range(classes)]
    return ClassPool(images, members, [f"c{c}" for c in range(classes)], "random")


def tiny_setup(**changes):
    cfg = MavrlConfig()
    cfg = dataclasses.replace(cfg, attack=dataclasses.replace(cfg.attack, **changes.pop("attack", {})),
                              inner=dataclasses.replace(cfg.inner, **changes.pop("inner", {})), **changes)
    torch.manual_seed(0)
    net = FewShotNet(encoder="conv4", in_channels=1, image_size=16, width=4, n_way=3, projection_dim=8)
    with torch.no_grad():  # a non-zero head, so that the inner step moves every part
        net.head.weight.normal_(0, 0.1)
    pool = random_pool()
    task = sample_task(pool, n_way=3, k_shot=2, queries=3, generator=task_generator(0, 0, 0))
    return cfg, net, task


def test_first_order_mavrl_equals_a_hand_written_two_view_computation():
    # eps = 0: the attacked views are the views themselves, so the hand computation needs no attack.
    cfg, net, task = tiny_setup(attack={"eps": 0.0, "steps": 1}, inner={"lr": 0.1, "steps": 1})
    loss, _ = TaskLosses(net, cfg)(task, torch.Generator().manual_seed(5))
    ours = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)

    g = torch.Generator().manual_seed(5)
    view1 = augmented_view(task.support, crop_scale=cfg.mavrl.crop_scale, flip=False, generator=g)
    view2 = augmented_view(task.support, crop_scale=cfg.mavrl.crop_scale, flip=False, generator=g)
    encoders = []
    for view in (view1, view2):  # dual inner loops: one SGD step from the same initialisation per view
        copy_ = copy.deepcopy(net)
        grads = torch.autograd.grad(F.cross_entropy(copy_(view), task.support_labels), list(copy_.parameters()),
                                    allow_unused=True)
        with torch.no_grad():
            for p, grad in zip(copy_.parameters(), grads, strict=True):
                if grad is not None:
                    p -= 0.1 * grad
        encoders.append(copy_)
    first, second = encoders
    outer = (nt_xent(first(view1, "projection"), second(view2, "projection"), 0.5)
             + 0.5 * (F.cross_entropy(first(task.query), task.query_labels)
                      + F.cross_entropy(second(task.query), task.query_labels)))
    outer.backward()
    for ours_grad, p1, p2 in zip(ours, first.parameters(), second.parameters(), strict=True):
        expected = p1.grad + p2.grad  # first order: d theta_i' / d theta = identity
        assert torch.allclose(ours_grad, expected, atol=1e-5, rtol=1e-4)


def test_second_order_changes_the_meta_gradient_and_attacks_change_the_loss():
    cfg, net, task = tiny_setup(attack={"eps": 0.0, "steps": 1})
    first = TaskLosses(net, cfg)(task, torch.Generator().manual_seed(5))[0]
    g_first = torch.autograd.grad(first, list(net.encoder.parameters()))
    second_cfg = dataclasses.replace(cfg, inner=dataclasses.replace(cfg.inner, second_order=True))
    second = TaskLosses(net, second_cfg)(task, torch.Generator().manual_seed(5))[0]
    g_second = torch.autograd.grad(second, list(net.encoder.parameters()))
    assert torch.allclose(first, second)  # same forward value ...
    assert any(not torch.allclose(a, b) for a, b in zip(g_first, g_second, strict=True))  # ... other gradient
    attacked_cfg = dataclasses.replace(cfg, attack=dataclasses.replace(cfg.attack, eps=8 / 255, steps=3))
    attacked = TaskLosses(net, attacked_cfg)(task, torch.Generator().manual_seed(5))[0]
    assert attacked > first  # the label-free attacks push the views apart


def test_every_method_meets_the_same_tasks_for_a_seed(monkeypatch):
    seen: dict[str, list] = {}

    def record(self, task, generator):
        seen.setdefault(self.cfg.method, []).append(task.support)
        return torch.zeros((), requires_grad=True), {}

    monkeypatch.setattr(TaskLosses, "__call__", record)
    pool = random_pool()
    net = FewShotNet(encoder="conv4", in_channels=1, image_size=16, width=4, n_way=3, projection_dim=8)
    for method in ("mavrl", "maml", "aq", "adml", "rocl"):
        cfg = dataclasses.replace(MavrlConfig(method=method), task=dataclasses.replace(MavrlConfig().task, n_way=3))
        for rank in (0, 1):  # two ranks of two tasks each = one process of four
            learner = MetaLearner(net, cfg, pool, rank=rank, tasks_per_rank=2)
            learner(7)
    reference = seen["mavrl"]
    assert len(reference) == 4 and not torch.equal(reference[0], reference[1])
    for method, supports in seen.items():
        assert all(torch.equal(a, b) for a, b in zip(supports, reference, strict=True)), method


def test_impossible_tasks_are_refused_naming_the_class():
    pool = random_pool(per_class=8)
    with pytest.raises(UsageError, match="6-way tasks need 6 classes, random offers 5"):
        check_task_shape(pool, n_way=6, k_shot=1, queries=1, where="test")
    pool.members[3] = pool.members[3][:4]
    with pytest.raises(UsageError, match="class 'c3' of random has 4 images, a task takes 2 shots"):
        check_task_shape(pool, n_way=5, k_shot=2, queries=3, where="test")
    check_task_shape(pool, n_way=5, k_shot=1, queries=3, where="test")


def _write_domain(root, classes: int, draw) -> str:
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(6):
            image = (rng.random((20, 20)) * 60).astype(np.uint8)
            draw(image, c, i)
            Image.fromarray(image).save(folder / f"{i}.png")
    return f"imagefolder:{root}"


def test_fewshot_protocol_scores_an_unseen_domain(cli, tmp_path):
    def bars(image, c, i):
        image[:, 2 + 3 * c: 4 + 3 * c] = 255

    def squares(image, c, i):
        image[3 * c: 3 * c + 6, 3 * c: 3 * c + 6] = 255

    trained = cli("train", "mavrl", f"data.domain={_write_domain(tmp_path / 'bars', 6, bars)}",
                  "data.image_size=16", "data.train_classes=0.5", "model.width=8", "task.n_way=3",
                  "task.meta_batch=2", "train.steps=2", "eval.tasks=0", "name=tiny-mavrl", "--format", "quiet")
    assert trained.code == 0, trained.stderr
    args = ["eval", "tiny-mavrl", "--protocol", "fewshot", "--data", _write_domain(tmp_path / "squares", 3, squares),
            "--way", "3", "--shot", "1", "--queries", "4", "--tasks", "5", "--steps", "4", "--test-steps", "3",
            "--format", "json"]
    first, again = cli(*args), cli(*args)
    assert first.code == 0, first.stderr
    out = first.json()
    assert out["metrics"] == again.json()["metrics"]  # fixed task seeds: the same tasks, the same numbers
    assert out["tasks"] == 5 and out["classes"] == "all (unseen domain)"
    m = out["metrics"]
    assert 0 <= m["robust_accuracy"] <= m["clean_accuracy"] and m["clean_ci95"] > 0
    proto = cli(*args[:-2], "--adapt", "prototype", "--format", "json")
    assert proto.code == 0 and proto.json()["adapt"] == "prototype"
    bad = cli(*args[:-2], "--queries", "6")
    assert bad.code == 2 and "has 6 images" in bad.stderr
    unseen = cli("eval", "tiny-mavrl", "--protocol", "fewshot", "--way", "3", "--tasks", "2", "--queries", "4",
                 "--format", "json")
    assert unseen.code == 0 and unseen.json()["classes"] == "unseen"
