"""Speed of W1/A1 MobileNetV2: a QAT step against a float training step, and deployed latency.

Issue 13's "Speed" item, measured in one process with one thread
(``torch.set_num_threads(1)``), MobileNetV2 (stride-1 stem) at width 0.5 and
1.0 on digits-shaped (8x8x1) and CIFAR-shaped (32x32x3) random inputs, and on
request (``--data imagenet``) at the pretrained network's own scale: 224x224x3
with the standard stride-2 stem (use ``--batch 16`` there on a CPU):

* ``step``: one optimizer step at batch 64 (forward, loss, backward, Adam).
  The float step is the supervised one (cross-entropy). The QAT step is the
  one ``mltk quantize`` takes (recipe.py): the training form of the default
  plan (``quant.min_binary_channels`` 32, float shortcuts) with every layer
  switched on (inputs and weights quantized, calibrated first, as at the end
  of the schedule), and the distillation loss with the float teacher's
  forward pass (``kd.weight`` 0.5 in every preset). Forms: XNOR-Net, and
  BiTAT with the PCA transform (ReActNet activations, its default); BiTAT
  is also timed without the teacher, to show what the distillation costs.
* ``latency``: the eval, ``no_grad`` forward pass of the float network and
  of the deployed form of each trained form (``to_deployed_form`` +
  ``fill_deployed``, what ``mltk eval`` runs after unpacking), batch 1 and 64.

Within each configuration the forms are timed in turn in every repeat (so a
neighbour's load on a shared CPU falls on all of them alike); medians are
reported. ``--label`` files the run under a name (e.g. before/after a change
to the deployed layers) in benchmarks/results/quantize_speed.json; the .md is
rewritten from every run filed there:

    python benchmarks/quantize_speed.py --label after

``--device cuda`` times the same on a GPU (all threads, CUDA synchronised
around every timed call; ``--batch`` for a GPU-sized batch).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import mltk.engines  # noqa: F401  (registers the model kinds)
from mltk.engines.quantize.calibrate import calibrate_layers
from mltk.engines.quantize.config import BitatSpec, QuantizeConfig, QuantSpec
from mltk.engines.quantize.layers import DeployedInputQuantizer, DeployedLayer, FastInferenceRPReLU
from mltk.engines.quantize.methods import method_settings, training_options
from mltk.engines.quantize.network import (
    fill_deployed,
    gated_activations_of,
    plan_quantization,
    quantized_layers,
    to_deployed_form,
    to_training_form,
)
from mltk.engines.quantize.quantizers import RPReLU, binary_sign, uniform_quantize
from mltk.engines.quantize.recipe import distillation_loss
from mltk.nn import build_from_spec, build_model

RESULTS = Path(__file__).parent / "results"
JSON_PATH = RESULTS / "quantize_speed.json"
MD_PATH = RESULTS / "quantize_speed.md"
INPUTS = {"digits": (1, 8), "cifar": (3, 32), "imagenet": (3, 224)}  # name -> (channels, size)
DEFAULT_INPUTS = ["digits", "cifar"]
# label -> (quant.method, bitat.activations); bitat's default transform is pca. Its default activations are
# ReActNet's; the digits and cifar10-cpu presets use XNOR-Net's, so both are timed.
METHODS = {"xnor": ("xnor", "reactnet"), "bitat, pca": ("bitat", "reactnet"),
           "bitat, pca, xnor activations": ("bitat", "xnor")}
BATCH = 64
CLASSES = 10


def float_network(width: float, channels: int, size: int) -> torch.nn.Module:
    """MobileNetV2 as mltk trains it on small images (stride-1 stem), or with ImageNet's stride-2 stem at 224 px."""
    torch.manual_seed(0)
    return build_model("mobilenet_v2", num_classes=CLASSES, in_channels=channels, image_size=size,
                       width_mult=width, stem_stride=2 if size >= 224 else 1)


def training_form(parent: torch.nn.Module, method: tuple[str, str], channels: int, size: int,
                  device: torch.device = torch.device("cpu"), bitat: dict | None = None
                  ) -> tuple[torch.nn.Module, dict]:
    """``parent``'s QAT form as ``mltk quantize`` builds it, every layer switched on (the schedule's end).

    method: (quant.method, bitat.activations), a value of METHODS; bitat: other BitatSpec fields to set.
    """
    name, activations = method
    cfg = QuantizeConfig(quant=QuantSpec(method=name), bitat=BitatSpec(activations=activations, **(bitat or {})))
    settings = method_settings(cfg)
    student = copy.deepcopy(parent)
    plan = plan_quantization(student, image_shape=(channels, size, size), bits=1, act_bits=cfg.act_bits(),
                             act_kind=settings.act_kind, binary_activation=settings.binary_activation,
                             min_binary_channels=cfg.quant.min_binary_channels,
                             float_shortcuts=cfg.quant.float_shortcuts)
    to_training_form(student, plan, training_options(cfg, settings))
    student.to(device)  # the quantizers' parameters are made on the CPU
    layers, gates = quantized_layers(student, plan), gated_activations_of(student, plan)
    for layer in layers:  # inputs first, then the weights, calibrated on the quantized inputs (recipe.py)
        layer.act_on.fill_(True)
    for gate in gates.values():
        gate.on.fill_(True)
    count = 256 if size <= 64 else 32  # the transforms need only be measured, not good, for a timing
    calibration = torch.randint(0, 256, (count, channels, size, size), dtype=torch.uint8,
                                generator=torch.Generator().manual_seed(1))
    calibrate_layers(student, layers, calibration, batch_size=128, device=device)
    for layer in layers:
        layer.weight_on.fill_(True)
    return student.train(), plan


def deployed_form(parent: torch.nn.Module, student: torch.nn.Module, plan: dict) -> torch.nn.Module:
    deployed = build_from_spec(parent.spec)
    to_deployed_form(deployed, plan)
    student.eval()
    fill_deployed(deployed, student, plan)
    student.train()
    return deployed.to(next(parent.parameters()).device).eval()  # the deployed buffers are made on the CPU


def step_function(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  teacher: torch.nn.Module | None, kd_weight: float):
    """One optimizer step of ``model``: forward, loss (distilled from ``teacher`` when given), backward, Adam."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        if teacher is None:
            loss = F.cross_entropy(logits, labels)
        else:
            with torch.no_grad():
                teacher_logits = teacher(images)
            loss = distillation_loss(logits, labels, teacher_logits, weight=kd_weight, temperature=1.0)
        loss.backward()
        optimizer.step()

    return step


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_seconds(functions: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, all of them called in turn in every repeat (one warm-up).

    On a GPU the queue is drained before and after each call, so a call's time is its own work.
    """
    times = {name: [] for name in functions}
    for function in functions.values():
        function()
    for _ in range(repeats):
        for name, function in functions.items():
            _synchronize()
            start = time.perf_counter()
            function()
            _synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(own)[len(own) // 2] for name, own in times.items()}


def measure(width: float, data: str, step_repeats: int, latency_repeats: int,
            device: torch.device = torch.device("cpu"), batch_size: int = BATCH,
            bitat: dict | None = None) -> dict:
    channels, size = INPUTS[data]
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, channels, size, size, generator=generator).to(device)
    labels = torch.randint(0, CLASSES, (batch_size,), generator=generator).to(device)
    parent = float_network(width, channels, size).to(device)
    teacher = copy.deepcopy(parent).eval()
    kd_weight = QuantizeConfig().kd.weight
    students = {label: training_form(parent, method, channels, size, device, bitat)
                for label, method in METHODS.items()}
    plan = students["bitat, pca"][1]
    binary = len(plan["layers"])
    float_layers = len(plan["full_precision"])

    float_model = copy.deepcopy(parent).train()
    steps = {"float": step_function(float_model, images, labels, None, 0.0)}
    for label, (student, _) in students.items():
        steps[label] = step_function(student, images, labels, teacher, kd_weight)
    steps["bitat, pca, no teacher"] = step_function(students["bitat, pca"][0], images, labels, None, 0.0)
    step_s = median_seconds(steps, step_repeats)

    deployed = {"float": copy.deepcopy(parent).eval()}
    latency_batches = (1, batch_size)
    for label, (student, student_plan) in students.items():
        deployed[label] = deployed_form(parent, student, student_plan)
    latency = {}
    with torch.no_grad():
        for batch in latency_batches:
            x = images[:batch]
            calls = {label: (lambda model=model, x=x: model(x)) for label, model in deployed.items()}
            latency[batch] = median_seconds(calls, latency_repeats if batch > 1 else 4 * latency_repeats)
    return {"width": width, "data": data, "input": f"{size}x{size}x{channels}", "batch": batch_size,
            "binary_layers": binary,
            "float_layers": float_layers, "kd_weight": kd_weight,
            "step_s": step_s, "step_ratio": {k: v / step_s["float"] for k, v in step_s.items() if k != "float"},
            "latency_ms": {str(b): {k: 1000 * v for k, v in t.items()} for b, t in latency.items()},
            "latency_ratio": {str(b): {k: v / t["float"] for k, v in t.items() if k != "float"}
                              for b, t in latency.items()}}


@contextlib.contextmanager
def previous_forwards():
    """The deployed layers' forwards as they were before the in-place/fused-sign/prelu change to layers.py
    (kept here only to measure that change against, in one process, on the same networks)."""

    def quantizer(self, x):
        if self.kind == "uniform":
            return uniform_quantize(x, self.step, bits=self.act_bits)[0]
        return binary_sign(x, self.threshold.view(1, -1, *([1] * (x.dim() - 2))))

    def layer(self, x):
        q = self.input_quantizer(x) if self.input_quantizer is not None else x
        y = self.op(q, self.codes)
        shape = (1, -1) + (1,) * (y.dim() - 2)
        y = y * self.out_scale.view(shape) + self.out_bias.view(shape)
        if self.shortcut is not None:
            y = y + self.shortcut(x, y.shape[-2:] if y.dim() == 4 else None)
        return y

    current = DeployedInputQuantizer.forward, DeployedLayer.forward, FastInferenceRPReLU.forward
    DeployedInputQuantizer.forward, DeployedLayer.forward, FastInferenceRPReLU.forward = quantizer, layer, \
        RPReLU.forward
    try:
        yield
    finally:
        DeployedInputQuantizer.forward, DeployedLayer.forward, FastInferenceRPReLU.forward = current


@contextlib.contextmanager
def float_products(model: torch.nn.Module):
    """``model``'s deployed layers with their int8 matrix products off: float convolutions on the +-1 values,
    as before the products existed."""
    layers = [m for m in model.modules() if isinstance(m, DeployedLayer) and m.integer_product]
    for layer in layers:
        layer.integer_product = False
    try:
        yield
    finally:
        for layer in layers:
            layer.integer_product = True


def compare_previous(width: float, data: str, repeats: int, baseline: str = "previous") -> dict:
    """Deployed latency with a baseline's forwards against the current ones, alternated; bitwise equality.

    baseline: "previous" (the forwards before the in-place/fused-sign/prelu change) or "float products"
    (the int8 matrix products of the binary 1x1 convolutions off)."""
    channels, size = INPUTS[data]
    images = torch.rand(BATCH, channels, size, size, generator=torch.Generator().manual_seed(0))
    parent = float_network(width, channels, size)
    row = {"width": width, "data": data, "input": f"{size}x{size}x{channels}", "ms": {}, "bitwise_equal": {}}
    for label, method in METHODS.items():
        student, plan = training_form(parent, method, channels, size)
        with torch.no_grad():  # move the learned vectors off their initial values, as training would
            for name, value in student.named_parameters():
                if name.endswith(("threshold", "shift_in", "shift_out")):
                    value.uniform_(-0.1, 0.1)
                elif name.endswith("slope"):
                    value.uniform_(-0.5, 1.0)
        model = deployed_form(parent, student, plan)

        def previous(x, model=model):
            with previous_forwards() if baseline == "previous" else float_products(model):
                return model(x)

        with torch.no_grad():
            for batch in (1, BATCH):
                x = images[:batch]
                same = torch.equal(previous(x).view(torch.int32), model(x).view(torch.int32))
                times = median_seconds({"previous": lambda x=x, f=previous: f(x), "current": lambda x=x, f=model: f(x)},
                                       repeats if batch > 1 else 4 * repeats)
                row["ms"][f"{label}, batch {batch}"] = {k: 1000 * v for k, v in times.items()}
                row["bitwise_equal"][f"{label}, batch {batch}"] = same
    return row


def machine(device: torch.device = torch.device("cpu")) -> str:
    """The CPU's model name and count (platform.processor() is empty on Linux), and the GPU timed on if any."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return f"{platform.machine()}, {names[0] if names else platform.processor() or 'unknown CPU'}, " \
           f"{os.cpu_count()} CPUs{gpu}"


def write_report(results: dict) -> None:
    lines = ["# W1/A1 MobileNetV2: QAT step and deployed latency (`benchmarks/quantize_speed.py`)", "",
             "Issue 13, item 3 (Speed). One process, one thread on a CPU (`torch.set_num_threads(1)`; a GPU run "
             "says so in its machine line), random inputs, "
             "MobileNetV2 with the stride-1 stem (at 224x224x3 the standard stride-2 one), 10 classes, the default plan (`quant.min_binary_channels=32`, "
             "float shortcuts). Forms timed in turn within every repeat; medians. Goals: QAT step at most 1.5x "
             "the float step; deployed latency at most 1.0x the float network.", "",
             "QAT step = what `mltk quantize` does per step: the training form with every layer switched on "
             "(as at the end of the schedule), the distillation loss with the float teacher's forward pass "
             "(kd.weight 0.5), backward, Adam. Float step = forward, cross-entropy, backward, Adam. "
             "Latency: eval, `no_grad` forward of the float network and of the deployed form "
             "(`to_deployed_form` + `fill_deployed`: unpacked ±1 weights; float convolutions, except that from run "
             "\"after, int8 products\" on the binary 1x1 convolutions run as int8 matrix products on a CPU; mltk "
             "has no bit-packed kernel).", ""]
    for label, run in results["runs"].items():
        lines += [f"## Run: {label}", "", f"Command: `{run['command']}`", "", f"Machine: {run['machine']}; "
                  f"torch {run['torch']}; step repeats {run['step_repeats']}, latency repeats "
                  f"{run['latency_repeats']} (x4 at batch 1).", ""]
        if run.get("note"):
            lines += [run["note"], ""]
        forms = [form for form in run["rows"][0]["step_s"] if form != "float"]
        lines += [f"### (a) one optimizer step, batch {run['rows'][0].get('batch', BATCH)}", "",
                  "| width | input | binary / float layers | float (s) | "
                  + " | ".join(f"{form} (s)" for form in forms) + " | "
                  + " | ".join(f"{form} / float" for form in forms) + " |",
                  "|---|---|---|---|" + "---|" * (2 * len(forms))]
        for row in run["rows"]:
            s, r = row["step_s"], row["step_ratio"]
            lines.append(f"| {row['width']} | {row['input']} | {row['binary_layers']} / {row['float_layers']} | "
                         f"{s['float']:.3f} | " + " | ".join(f"{s[form]:.3f}" for form in forms) + " | "
                         + " | ".join(f"{r[form]:.2f}x" for form in forms) + " |")
        deployed = [form for form in next(iter(run["rows"][0]["latency_ms"].values())) if form != "float"]
        lines += ["", "### (b) inference latency per batch (ms, median)", "",
                  "| width | input | batch | float | " + " | ".join(f"deployed {form}" for form in deployed) + " | "
                  + " | ".join(f"{form} / float" for form in deployed) + " |",
                  "|---|---|---|---|" + "---|" * (2 * len(deployed))]
        for row in run["rows"]:
            for batch, ms in row["latency_ms"].items():
                r = row["latency_ratio"][batch]
                lines.append(f"| {row['width']} | {row['input']} | {batch} | {ms['float']:.2f} | "
                             + " | ".join(f"{ms[form]:.2f}" for form in deployed) + " | "
                             + " | ".join(f"{r[form]:.2f}x" for form in deployed) + " |")
        lines.append("")
    if results.get("previous"):
        previous = results["previous"]
        lines += ["## The change to the deployed layers, in one process", "",
                  f"Command: `{previous['command']}`. The same deployed networks (learned thresholds and RPReLU "
                  "vectors drawn away from their initial values) run with the forwards layers.py had before "
                  "(kept in the benchmark) and with the current ones, alternated; the outputs compared bit for "
                  "bit.", "", *_comparison_table(previous["rows"], "previous", "current"), ""]
    if results.get("integer"):
        integer = results["integer"]
        lines += ["## The int8 matrix products, in one process", "",
                  f"Command: `{integer['command']}` ({integer['machine']}). The same deployed networks (learned "
                  "thresholds and RPReLU vectors drawn away from their initial values) with the binary 1x1 "
                  "convolutions run as float convolutions on the +-1 values (`integer_product` off) and as int8 "
                  "matrix products (on, the default on a CPU), alternated; the outputs compared bit for bit.", "",
                  *_comparison_table(integer["rows"], "float products", "int8 products"), ""]
    if results.get("findings"):
        lines += ["## Findings", "", results["findings"], ""]
    MD_PATH.write_text("\n".join(lines))


def _comparison_table(rows: list[dict], baseline: str, current: str) -> list[str]:
    """The markdown table of a ``compare_previous`` run: times of the baseline and current forms, their ratio,
    and whether the outputs were equal bit for bit."""
    lines = [f"| width | input | form, batch | {baseline} (ms) | {current} (ms) | "
             f"{current.split()[0]} / {baseline.split()[0]} | bitwise equal |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        for key, ms in row["ms"].items():
            lines.append(f"| {row['width']} | {row['input']} | {key} | {ms['previous']:.2f} | {ms['current']:.2f} | "
                         f"{ms['current'] / ms['previous']:.2f}x | {'yes' if row['bitwise_equal'][key] else 'NO'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--label", default="current", help="the name this run is filed under in the results")
    parser.add_argument("--note", default="", help="a sentence on what this run measures (e.g. which code)")
    parser.add_argument("--widths", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--data", nargs="+", default=DEFAULT_INPUTS, choices=list(INPUTS))
    parser.add_argument("--step-repeats", type=int, default=5)
    parser.add_argument("--latency-repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu", help="cpu (one thread) or cuda")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--refine-iters", type=int, default=None,
                        help="bitat.refine_iters of the BiTAT forms (default: the config's, 3)")
    parser.add_argument("--rank", type=int, default=None,
                        help="bitat.rank of the BiTAT forms (default: the config's, 0 = the full correlation)")
    parser.add_argument("--report", action="store_true", help="only rewrite the .md from the .json")
    parser.add_argument("--previous", action="store_true",
                        help="only compare the deployed layers' previous forwards with the current ones")
    parser.add_argument("--float-products", action="store_true",
                        help="only compare the deployed layers with their int8 matrix products off and on")
    args = parser.parse_args()
    results = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {"runs": {}}
    if args.previous:
        torch.set_num_threads(1)
        rows = [compare_previous(width, data, args.latency_repeats) for width in args.widths for data in args.data]
        results["previous"] = {"command": "python benchmarks/quantize_speed.py --previous", "rows": rows}
        RESULTS.mkdir(exist_ok=True)
        JSON_PATH.write_text(json.dumps(results, indent=2) + "\n")
    elif args.float_products:
        torch.set_num_threads(1)
        rows = [compare_previous(width, data, args.latency_repeats, "float products")
                for width in args.widths for data in args.data]
        results["integer"] = {"command": "python benchmarks/quantize_speed.py --float-products",
                              "machine": machine(), "rows": rows}
        RESULTS.mkdir(exist_ok=True)
        JSON_PATH.write_text(json.dumps(results, indent=2) + "\n")
    elif not args.report:
        bitat = {key: value for key, value in (("refine_iters", args.refine_iters), ("rank", args.rank))
                 if value is not None}
        device = torch.device(args.device)
        if device.type == "cpu":
            torch.set_num_threads(1)
        rows = []
        for width in args.widths:
            for data in args.data:
                row = measure(width, data, args.step_repeats, args.latency_repeats, device, args.batch, bitat)
                print(json.dumps(row), flush=True)
                rows.append(row)
        results["runs"][args.label] = {
            "command": shlex.join(["python", "benchmarks/quantize_speed.py", *sys.argv[1:]]), "note": args.note,
            "machine": machine(device),
            "torch": torch.__version__, "step_repeats": args.step_repeats, "latency_repeats": args.latency_repeats,
            "rows": rows, "settings": dataclasses.asdict(QuantizeConfig().quant)}
        RESULTS.mkdir(exist_ok=True)
        JSON_PATH.write_text(json.dumps(results, indent=2) + "\n")
    write_report(results)


if __name__ == "__main__":
    main()
