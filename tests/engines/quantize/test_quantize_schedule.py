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
    first, _ = load_safetensors(registry.resolve(whole["artifact"]).file("model.safetensors"))
    second, _ = load_safetensors(registry.resolve(resumed["artifact"]).file("model.safetensors"))
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert resumed["metrics"]["test_accuracy"] == whole["metrics"]["test_accuracy"]
