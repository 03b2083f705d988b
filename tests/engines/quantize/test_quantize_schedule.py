"""BiTAT's progressive schedule binarizes bottom-up, one stage at a time; a resumed run ends bit-identical."""

from __future__ import annotations

import json

import torch

from mltk.core.console import Reporter
from mltk.core.registry import Registry
from mltk.core.runs import RunDir
from mltk.core.tensor_files import load_safetensors
from mltk.engines.quantize import quantize
from mltk.engines.quantize.schedule import build_phases, layer_groups, phase_at


def test_phases_quantize_growing_bottom_up_prefixes():
    phases = build_phases("progressive", num_layers=5, total_steps=100, stages=3, progressive_fraction=0.6)
    assert layer_groups(5, 3) == [(0, 1), (2,), (3, 4)]
    assert [p.weight_layers for p in phases] == [(0, 1), (0, 1, 2), (0, 1, 2, 3, 4), (0, 1, 2, 3, 4)]
    assert [(p.start, p.end) for p in phases] == [(0, 20), (20, 40), (40, 60), (60, 100)]
    assert phase_at(phases, 39) == 1 and phase_at(phases, 60) == 3 and phase_at(phases, 100) == 3
    two_step = build_phases("two-step", num_layers=3, total_steps=10, step1_fraction=0.5)
    assert two_step[0].act_layers == (0, 1, 2) and two_step[0].weight_layers == ()
    assert two_step[1].weight_layers == (0, 1, 2) and two_step[1].start == 5


def _flags(ckpt_dir, names):
    tensors, _ = load_safetensors(ckpt_dir / "model.safetensors")
    return [bool(tensors[f"{name}.weight_on"]) for name in names]


def test_progressive_schedule_binarizes_layers_in_forward_order(fp_digits, tmp_path):
    registry = Registry(tmp_path / "home")
    # 44 steps: stages of 11 steps for each of the 2 layers, then 22 steps with all quantized
    results = quantize(str(fp_digits), overrides=["train.epochs=2", "calibration.images=128", "train.ckpt_every=1",
                                                  "train.keep_checkpoints=100", "bitat.progressive_fraction=0.5"],
                       runs_root=tmp_path / "runs", registry=registry, reporter=Reporter("quiet"))
    card = registry.resolve(results["artifact"]).card()
    names = [layer["name"] for layer in card["quantization"]["plan"]["layers"]]
    assert names == ["net.features.4", "net.features.8"]  # the order the forward pass calls them
    run = RunDir(results["run_dir"])
    seen = {ckpt.step: _flags(ckpt.path, names) for ckpt in run.checkpoints()}
    # a checkpoint at step s holds the state after s steps; stage k switches on at the start of its first step
    assert seen[1] == [True, False]
    assert seen[11] == [True, False]
    assert seen[12] == [True, True]
    assert seen[44] == [True, True]
    for step, flags in seen.items():  # always a bottom-up prefix
        assert flags == sorted(flags, reverse=True), (step, flags)
    stages = [json.loads(line)["stage"] for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert stages == ["stage 2/2", "all layers quantized"]


def test_resumed_run_ends_bit_identical(fp_digits, tmp_path):
    overrides = ["train.epochs=2", "calibration.images=128", "train.ckpt_every=5", "train.keep_checkpoints=100",
                 "bitat.transform=learned"]
    registry = Registry(tmp_path / "home")
    whole = quantize(str(fp_digits), overrides=overrides, runs_root=tmp_path / "runs", registry=registry,
                     reporter=Reporter("quiet"))
    # step 10 lies in stage 1; the resumed run crosses the stage-2 switch (calibration) itself
    resumed = quantize(str(fp_digits), overrides=overrides, resume=f"{whole['run_dir']}/ckpt/step-10",
                       runs_root=tmp_path / "runs", registry=registry, reporter=Reporter("quiet"))
    assert resumed["resumed_from"].endswith("step-10")
    _assert_same_artifact(registry, whole, resumed)


def test_adaptation_phase_comes_first_and_shifts_the_method_schedule():
    from mltk.engines.quantize.schedule import ADAPT_LABEL, split_steps, with_adaptation

    progressive = build_phases("progressive", num_layers=2, total_steps=40, stages=2, progressive_fraction=0.5)
    phases = with_adaptation(progressive, 10)
    assert phases[0].adapt and phases[0].label == ADAPT_LABEL
    assert (phases[0].start, phases[0].end) == (0, 10) and phases[0].act_layers == phases[0].weight_layers == ()
    assert [(p.start, p.end) for p in phases[1:]] == [(10, 20), (20, 30), (30, 50)]
    assert [p.weight_layers for p in phases[1:]] == [p.weight_layers for p in progressive]
    assert not any(p.adapt for p in phases[1:])
    assert with_adaptation(progressive, 0) == progressive
    assert split_steps(10, 40, 0) == (10, 40) and split_steps(10, 40, 25) == (5, 20)
    assert split_steps(0, 40, 25) == (0, 25)  # without adaptation max_steps caps as before


def _layer_flags(ckpt_dir, names, flag):
    tensors, _ = load_safetensors(ckpt_dir / "model.safetensors")
    return [bool(tensors[f"{name}.{flag}"]) for name in names]


def test_float_adaptation_trains_with_shortcuts_and_no_quantizer_then_resumes_bit_identical(fp_digits, tmp_path,
                                                                                           monkeypatch):
    from mltk.engines.quantize.layers import QuantizedLayer

    # 22 steps per epoch: 22 adaptation steps, then xnor's 22 all-at-once steps
    overrides = ["quant.method=xnor", "train.epochs=1", "train.adapt_epochs=1", "calibration.images=128",
                 "train.ckpt_every=5", "train.keep_checkpoints=100"]
    seen = []  # (shortcut added, input quantized, weight quantized) of every QuantizedLayer call in training
    original = QuantizedLayer.forward

    def spy(self, x):
        if self.training:
            seen.append((self.shortcut is not None and (bool(self.act_on) or bool(self.shortcut_on)),
                         bool(self.act_on), bool(self.weight_on)))
        return original(self, x)

    monkeypatch.setattr(QuantizedLayer, "forward", spy)
    registry = Registry(tmp_path / "home")
    whole = quantize(str(fp_digits), overrides=overrides, runs_root=tmp_path / "runs", registry=registry,
                     reporter=Reporter("quiet"))
    layers = 2  # ConvNet-3: two binary-input layers, both with identity shortcuts
    assert len(seen) == 44 * layers
    assert set(seen[:22 * layers]) == {(True, False, False)}  # adaptation: float, with shortcuts
    assert set(seen[22 * layers:]) == {(True, True, True)}  # then xnor, everything quantized
    card = registry.resolve(whole["artifact"]).card()
    schedule = card["quantization"]["schedule"]
    assert [(p["label"], p["steps"]) for p in schedule] == [("adapting to float shortcuts", 22),
                                                            ("all layers quantized", 22)]
    names = [layer["name"] for layer in card["quantization"]["plan"]["layers"]]
    run = RunDir(whole["run_dir"])
    flags = {c.step: _layer_flags(c.path, names, "act_on") + _layer_flags(c.path, names, "weight_on")
             for c in run.checkpoints()}
    assert flags[20] == [False] * 4 and flags[25] == [True] * 4
    stages = [json.loads(line)["stage"] for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert stages == ["adapting to float shortcuts", "all layers quantized"]

    # resumed inside the adaptation phase: the shortcuts (not checkpointed) come back on, the run ends identical
    seen.clear()
    resumed = quantize(str(fp_digits), overrides=overrides, resume=f"{whole['run_dir']}/ckpt/step-10",
                       runs_root=tmp_path / "runs", registry=registry, reporter=Reporter("quiet"))
    assert set(seen[:12 * layers]) == {(True, False, False)}
    _assert_same_artifact(registry, whole, resumed)


def _assert_same_artifact(registry, whole: dict, resumed: dict) -> None:
    """The resumed run ends bit-identical to the uninterrupted one: every stored tensor and the accuracy."""
    first, _ = load_safetensors(registry.resolve(whole["artifact"]).file("model.safetensors"))
    second, _ = load_safetensors(registry.resolve(resumed["artifact"]).file("model.safetensors"))
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert resumed["metrics"]["test_accuracy"] == whole["metrics"]["test_accuracy"]


def test_branch_gain_scales_each_binary_branch_once_as_its_inputs_turn_binary(fp_digits, tmp_path):
    # bitat's progressive schedule, 2 stages of 11 steps: layer 0's inputs turn binary at step 0, layer 1's at 11
    overrides = ["train.epochs=2", "calibration.images=128", "train.ckpt_every=1", "train.keep_checkpoints=100",
                 "bitat.progressive_fraction=0.5", "quant.branch_gain=0.25", "optim.lr=1e-6"]
    registry = Registry(tmp_path / "home")
    whole = quantize(str(fp_digits), overrides=overrides, runs_root=tmp_path / "runs", registry=registry,
                     reporter=Reporter("quiet"))
    card = registry.resolve(whole["artifact"]).card()
    names = [layer["name"] for layer in card["quantization"]["plan"]["layers"]]
    gammas = {c.step: [load_safetensors(c.path / "model.safetensors")[0][f"{name}.norm.weight"] for name in names]
              for c in RunDir(whole["run_dir"]).checkpoints()}
    parent, _ = load_safetensors(fp_digits / "model.safetensors")
    first_bn = next(spec["folded_bn"] for spec in card["quantization"]["plan"]["layers"])
    torch.testing.assert_close(gammas[1][0], 0.25 * parent[f"{first_bn}.weight"], atol=1e-4, rtol=0)
    torch.testing.assert_close(gammas[11][1], gammas[10][1], atol=1e-4, rtol=0)  # still float in stage 1
    torch.testing.assert_close(gammas[12][1], 0.25 * gammas[11][1], atol=1e-4, rtol=0)
    torch.testing.assert_close(gammas[13][0], gammas[12][0], atol=1e-4, rtol=0)  # each layer once
    # resumed after both switches (their act_on saved): not scaled again
    resumed = quantize(str(fp_digits), overrides=overrides, resume=f"{whole['run_dir']}/ckpt/step-15",
                       runs_root=tmp_path / "runs", registry=registry, reporter=Reporter("quiet"))
    _assert_same_artifact(registry, whole, resumed)


def test_the_branch_gain_is_chosen_by_architecture_unless_set():
    from mltk.engines.quantize.config import QuantizeConfig, QuantSpec

    assert QuantizeConfig().branch_gain("mobilenet_v2") == 0.01  # chosen on validation splits (digits, CIFAR-10)
    assert QuantizeConfig().branch_gain("convnet") == 1.0  # ConvNet-3 lost points at 0.01
    assert QuantizeConfig(quant=QuantSpec(branch_gain=0.5)).branch_gain("mobilenet_v2") == 0.5
