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
from mltk.nn.classifiers.evaluation import evaluate_classifier

# (label, regex of the layers with binary weights, regex of the layers with binary inputs); each regex is
# searched in "NAME KIND", KIND one of depthwise (a kxk conv, one input channel per group), expand (a 1x1
# conv to more channels), project (a 1x1 conv to fewer channels) or dense
NONE = "$^"
CONDITIONS = [
    ("no quantization (control)", NONE, NONE),
    ("W1/A32: binary weights, float inputs, all 51 layers", ".*", NONE),
    ("W32/A1: binary inputs of block 1 (2 layers)", NONE, r"features\.1\."),
    ("W32/A1: binary inputs of block 2 (3 layers, 8-channel bottleneck in)", NONE, r"features\.2\."),
    ("W32/A1: binary inputs of blocks 1-2 (5 layers)", NONE, r"features\.(1|2)\."),
    ("W32/A1: binary inputs of blocks 1-5 (14 layers)", NONE, r"features\.[1-5]\."),
    ("W32/A1: binary inputs of all 51 layers", NONE, ".*"),
    ("W1/A1: all 51 layers", ".*", ".*"),
]
# --conditions kinds: which kind of layer's binary inputs stop training (MobileNetV2)
KIND_CONDITIONS = [
    ("W32/A1: binary inputs of the depthwise 3x3s only", NONE, " depthwise$"),
    ("W32/A1: binary inputs of the expanding 1x1s only (the linear bottleneck in)", NONE, " expand$"),
    ("W32/A1: binary inputs of the projecting 1x1s only", NONE, " project$"),
    ("W32/A1: binary inputs of every 1x1 (depthwise inputs float)", NONE, " (expand|project)$"),
    ("W32/A1: binary inputs of the depthwise 3x3s and projecting 1x1s (expanding 1x1 inputs float)", NONE,
     " (depthwise|project)$"),
    ("W1/A1 but the depthwise inputs float (depthwise W1/A32)", ".*", " (expand|project)$"),
    ("W1/A1 but the expanding 1x1 inputs float (expanding W1/A32)", ".*", " (depthwise|project)$"),
    ("W1/A1: all 51 layers", ".*", ".*"),
]


def layer_kind(spec: dict) -> str:
    shape = spec["weight_shape"]  # out, in per group, kh, kw
    if len(shape) == 4 and shape[1] == 1 and shape[2] > 1:
        return "depthwise"
    if len(shape) == 4 and shape[2:] == [1, 1]:
        return "expand" if shape[0] > shape[1] else "project"
    return "dense"


def run(source, splits, label: str, weight_pattern: str, act_pattern: str, steps: int, seed: int,
        float_shortcuts: bool = False) -> dict:
    torch.manual_seed(seed)
    model = copy.deepcopy(source.model)
    shape = tuple(splits.train.image_shape)
    plan = plan_quantization(model, image_shape=shape, bits=1, act_bits=1, act_kind="sign",
                             binary_activation="identity", float_shortcuts=float_shortcuts)
    to_training_form(model, plan, TrainingOptions(transform="identity", ste="clipped"))
    layers, gates = quantized_layers(model, plan), gated_activations_of(model, plan)
    chosen = 0
    bottom = None
    for spec, layer in zip(plan["layers"], layers, strict=True):
        described = f"{spec['name']} {layer_kind(spec)}"
        weight_on = re.search(weight_pattern, described) is not None
        act_on = re.search(act_pattern, described) is not None
        chosen += weight_on or act_on
        layer.act_on.fill_(act_on)
        layer.weight_on.fill_(weight_on)
        gate = gates.get(spec["name"])
        if gate is not None:
            gate.on.fill_(act_on)
        if bottom is None and (weight_on or act_on):
            bottom = layer
    bottom = bottom or layers[0]
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
    parser.add_argument("--conditions", choices=["blocks", "kinds"], default="blocks",
                        help="blocks: binary inputs block by block; kinds: depthwise, expanding, projecting layers")
    args = parser.parse_args()
    torch.set_num_threads(1)
    source = load_source(SourceSpec(ref=args.parent))
    data = (source.task or {}).get("data") or {"name": "digits"}
    splits = load_splits(DataSpec(name=data["name"]))
    float_test = evaluate_classifier(source.model, splits.test, batch_size=512,
                                     device=torch.device("cpu"))["accuracy"]
    rows = []
    for label, weight_pattern, act_pattern in CONDITIONS if args.conditions == "blocks" else KIND_CONDITIONS:
        row = run(source, splits, label, weight_pattern, act_pattern, args.steps, args.seed, args.float_shortcuts)
        rows.append(row)
        print(json.dumps(row), flush=True, file=sys.stderr)
    print(json.dumps({"parent": args.parent, "float_test_accuracy": float_test, "optimizer": "adam lr 1e-3, batch 64",
                      "float_shortcuts": args.float_shortcuts, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
