"""Why W1/A1 MobileNetV2 on digits sits at chance: which quantizer breaks training, measured directly.

Takes the float MobileNetV2 parent of ``benchmarks/quantize.py --section
digits`` (from ``$MLTK_HOME``), builds the engine's own training-form network
(``plan_quantization`` + ``to_training_form``, XNOR settings: sign inputs,
ReLUs feeding binary-input layers removed, clipped STE, identity transform),
switches quantization on for a chosen set of layers and fine-tunes the whole
network for ``--steps`` steps (Adam, lr 1e-3, batch 64, cross-entropy, no
distillation). Prints, per condition, the training accuracy of the last 25
steps and the test accuracy of the quantized network, plus the norm of the
gradient reaching the bottom quantized layer at the first step.
``--float-shortcuts`` gives every binary-input layer its real-valued
shortcut (``quant.float_shortcuts``, the engine's default) and switches the
ReLUs feeding them off as the engine does.

    MLTK_HOME=/tmp/mltk-bench-quantize/home OMP_NUM_THREADS=1 \\
        python benchmarks/quantize_diagnose.py --parent mbv2-digits:1 --steps 50 > diag.json
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time

import torch
import torch.nn.functional as F

from mltk.data import DataSpec, load_splits
from mltk.engines.quantize.config import SourceSpec
from mltk.engines.quantize.network import (
    TrainingOptions,
    gated_activations_of,
    plan_quantization,
    quantized_layers,
    to_training_form,
)
from mltk.engines.quantize.source import load_source
from mltk.nn.evaluation import evaluate_classifier

# (label, which quantizers, regex over the planned layer names)
CONDITIONS = [
    ("no quantization (control)", "", "$^"),
    ("W1/A32: binary weights, float inputs, all 51 layers", "w", ".*"),
    ("W32/A1: binary inputs of block 1 (2 layers)", "a", r"features\.1\."),
    ("W32/A1: binary inputs of block 2 (3 layers, 8-channel bottleneck in)", "a", r"features\.2\."),
    ("W32/A1: binary inputs of blocks 1-2 (5 layers)", "a", r"features\.(1|2)\."),
    ("W32/A1: binary inputs of blocks 1-5 (14 layers)", "a", r"features\.[1-5]\."),
    ("W32/A1: binary inputs of all 51 layers", "a", ".*"),
    ("W1/A1: all 51 layers", "wa", ".*"),
]


def run(source, splits, label: str, which: str, pattern: str, steps: int, seed: int,
        float_shortcuts: bool = False) -> dict:
    torch.manual_seed(seed)
    model = copy.deepcopy(source.model)
    shape = tuple(splits.train.image_shape)
    plan = plan_quantization(model, image_shape=shape, bits=1, act_bits=1, act_kind="sign",
                             binary_activation="identity", float_shortcuts=float_shortcuts)
    to_training_form(model, plan, TrainingOptions(transform="identity", ste="clipped"))
    layers, gates = quantized_layers(model, plan), gated_activations_of(model, plan)
    chosen = 0
    for spec, layer in zip(plan["layers"], layers, strict=True):
        on = re.search(pattern, spec["name"]) is not None
        chosen += on
        layer.act_on.fill_(on and "a" in which)
        layer.weight_on.fill_(on and "w" in which)
        gate = gates.get(spec["name"])
        if gate is not None:
            gate.on.fill_(on and "a" in which)
    bottom = next((layer for layer, spec in zip(layers, plan["layers"], strict=True)
                   if re.search(pattern, spec["name"])), layers[0])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    images = splits.train.images.float() / 255
    labels = splits.train.labels
    rng = torch.Generator().manual_seed(seed)
    model.train()
    correct = seen = 0
    first_grad = None
    started = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(labels), (64,), generator=rng)
        logits = model(images[idx])
        loss = F.cross_entropy(logits, labels[idx])
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            first_grad = float(bottom.layer.weight.grad.norm())
        optimizer.step()
        if step >= steps - 25:
            correct += int((logits.argmax(1) == labels[idx]).sum())
            seen += len(idx)
    model.eval()
    test = evaluate_classifier(model, splits.test, batch_size=512, device=torch.device("cpu"))["accuracy"]
    return {"condition": label, "quantized_layers": chosen, "steps": steps,
            "train_accuracy_last_25_steps": correct / max(seen, 1), "test_accuracy": test,
            "bottom_layer_grad_norm_step0": first_grad, "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parent", default="mbv2-digits:1")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float-shortcuts", action="store_true",
                        help="real-valued shortcuts around the binary-input layers (the engine's default)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    source = load_source(SourceSpec(ref=args.parent))
    data = (source.task or {}).get("data") or {"name": "digits"}
    splits = load_splits(DataSpec(name=data["name"]))
    float_test = evaluate_classifier(source.model, splits.test, batch_size=512,
                                     device=torch.device("cpu"))["accuracy"]
    rows = []
    for label, which, pattern in CONDITIONS:
        row = run(source, splits, label, which, pattern, args.steps, args.seed, args.float_shortcuts)
        rows.append(row)
        print(json.dumps(row), flush=True, file=sys.stderr)
    print(json.dumps({"parent": args.parent, "float_test_accuracy": float_test, "optimizer": "adam lr 1e-3, batch 64",
                      "float_shortcuts": args.float_shortcuts, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
