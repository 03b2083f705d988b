"""What an incremental session changes: only the minor weights of the chosen layers (major weights,
BatchNorm, scores, masks and every other tensor bit-identical), and never the old prototypes."""

from __future__ import annotations

import pytest
import torch

from mltk.core import config
from mltk.core.catalog import preset_path
from mltk.engines.fscil.config import FscilConfig
from mltk.engines.fscil.masked_layers import MaskedLayer
from mltk.engines.fscil.sessions_runner import SessionRunner, build_network, load_fscil_data


def _runner(method: str) -> SessionRunner:
    cfg = config.resolve(FscilConfig, preset=preset_path("softnet", "tiny"),
                         overrides=[f"method={method}", "incremental.lr=0.05", "incremental.weight_decay=0.01"])
    data = load_fscil_data(cfg)
    torch.manual_seed(0)
    runner = SessionRunner(cfg, data, build_network(cfg, data), torch.device("cpu"))
    optimizer = torch.optim.SGD(runner.model.parameters(), lr=0.05, momentum=0.9)
    runner.model.train()
    for step in range(4):  # a little base training: BatchNorm statistics and weights move off their init
        loss, _, _ = runner.base_loss(step, 10, runner.model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    runner.close_session(0)
    return runner


def _session(runner: SessionRunner, session: int, steps: int = 3) -> None:
    params = runner.open_session(session)
    if params:
        optimizer = torch.optim.SGD(params, lr=runner.cfg.incremental.lr, momentum=0.9)
        for step in range(steps):
            loss, _, _ = runner.session_loss(100 + step, runner.model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    runner.close_session(session)


def _state(runner: SessionRunner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


def test_softnet_session_moves_only_minor_weights_of_the_chosen_layers():
    runner = _runner("softnet")
    before = _state(runner)
    _session(runner, 1)
    after = _state(runner)
    chosen = {f"{name}.weight" for name in runner.trained_layers}
    assert chosen and all("stages.1.0" in name for name in chosen)
    modules = dict(runner.model.named_modules())
    for name in chosen:
        layer = modules[name.removesuffix(".weight")]
        assert isinstance(layer, MaskedLayer)
        major = layer.mask == 1
        assert torch.equal(before[name][major], after[name][major])  # major: bit-identical
        assert bool((before[name][~major] != after[name][~major]).any())  # minor: moved
    for name in before:  # everything else, BatchNorm statistics, scores, masks included
        if name in chosen or name.startswith("prototype"):
            continue
        assert torch.equal(before[name], after[name]), name
    base = len(runner.data.plan.base_classes)
    assert torch.equal(before["prototypes"][:base], after["prototypes"][:base])  # old prototypes kept
    assert bool(after["prototype_set"][:base + 2].all()) and not bool(after["prototype_set"][base + 2:].any())


def test_old_prototypes_survive_every_later_session():
    runner = _runner("softnet")
    _session(runner, 1)
    kept = runner.model.prototypes[:8].clone()
    _session(runner, 2)
    assert torch.equal(kept, runner.model.prototypes[:8])
    assert bool(runner.model.prototype_set.all())


def test_finetune_moves_major_weights_too_and_hardnet_moves_nothing():
    finetune = _runner("finetune")
    before = _state(finetune)
    _session(finetune, 1)
    moved = [n for n in before if not torch.equal(before[n], finetune.model.state_dict()[n])]
    assert set(moved) == {f"{name}.weight" for name in finetune.trained_layers} | {"prototypes", "prototype_set"}

    hardnet = _runner("hardnet")
    before = _state(hardnet)
    assert hardnet.open_session(1) == []
    hardnet.close_session(1)
    moved = [n for n in before if not torch.equal(before[n], hardnet.model.state_dict()[n])]
    assert set(moved) == {"prototypes", "prototype_set"}


@pytest.mark.parametrize("method", ["softnet", "ncm"])
def test_scores_after_a_session_cover_every_class_seen(method):
    runner = _runner(method)
    result = runner.close_session(0)
    assert result["classes"] == 6 and result["novel_accuracy"] is None
    _session(runner, 1)
    result = runner.score(1)
    assert result["classes"] == 8 and 0 <= result["novel_accuracy"] <= 100
    assert result["test_images"] == int((runner.data.test.labels < 8).sum())
