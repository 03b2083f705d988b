"""A real pretrained MobileNetV2 to 1 bit, the way a user would do it.

1. ``mltk import mobilenet_v2_1.0_224_quant.tflite --arch mobilenet_v2``: the
   ImageNet MobileNetV2 (uint8 TFLite, ../shared/data) as a float classifier;
2. ``mltk train supervised init=... data=...``: fine-tuned on CIFAR-10 (a
   seeded subset of the shared training JPEGs; 5,000 other images held out as
   the test split, the same for every row), next to the same network trained
   from scratch at the same budget;
3. the fine-tuned network saved the way PyTorch users save one,
   ``torch.save(model.state_dict(), "mobilenet.pt")``;
4. ``mltk quantize --bits 1 mobilenet.pt --data ...`` with each method.

Every step is the real command line in a child process with one thread; the
commands and figures go to benchmarks/results/quantize_pretrained.{json,md}.

    python benchmarks/quantize_pretrained.py --train-images 2000 --epochs 4 --methods xnor bitat
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quantize import cifar_npz, mltk  # noqa: E402

TFLITE = (Path(__file__).resolve().parents[2] / "shared" / "data" / "pretrained_weights"
          / "mobilenet_tflite_imagenet_coral" / "mobilenet_v2_1.0_224_quant.tflite")
RESULTS = Path(__file__).resolve().parent / "results"
# The fine-tuned network keeps the ImageNet layers but, for 32 px images, the stride-1 stem and the
# symmetric padding that `mltk quantize` infers for a bare state_dict of a 32 px MobileNetV2.
FINE_TUNE = ["init_options.stem_stride=1", "init_options.tf_padding=false"]


def save_state_dict(work: Path, ref: str) -> Path:
    """The fine-tuned network as a plain torchvision state_dict file (what `torch.save` users hold)."""
    os.environ["MLTK_HOME"] = str(work / "home")
    from mltk.nn.artifacts import load_classifier

    path = work / "mobilenet.pt"
    torch.save(load_classifier(ref).model.net.state_dict(), path)
    return path


def run(work: Path, train_images: int, epochs: int, lr: float, methods: list[str]) -> dict:
    data = f"npz:{cifar_npz(work, train_images)}"
    imported = mltk(work, "import", str(TFLITE), "--arch", "mobilenet_v2", "--name", "mbv2-imagenet")
    budget = ["--preset", "cifar10-mobilenetv2", f"data={data}", f"train.epochs={epochs}", f"optim.lr={lr}",
              "train.batch_size=64"]
    tuned = mltk(work, "train", "supervised", *budget, f"init={imported['ref']}", *FINE_TUNE,
                 "name=mbv2-imagenet-cifar10")
    scratch = mltk(work, "train", "supervised", *budget, "model.options.width_mult=1.0", "name=mbv2-scratch-cifar10")
    state_dict = save_state_dict(work, tuned["artifact"])
    quantized = {method: mltk(work, "quantize", str(state_dict), "--bits", "1", "--data", data, "--method", method,
                              "--preset", "cifar10-cpu", f"name=mbv2-imagenet-cifar10-w1a1-{method}")
                 for method in methods}
    return {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), one thread per command",
            "work": str(work),
            "train_images": train_images, "epochs": epochs, "lr": lr,
            "imported": imported, "fine_tuned": tuned, "scratch": scratch, "quantized": quantized}


def write_markdown(result: dict) -> None:
    tuned, scratch = result["fine_tuned"], result["scratch"]
    lines = ["# A pretrained MobileNetV2 to 1 bit (`benchmarks/quantize_pretrained.py`)", "",
             f"Machine: {result['machine']}. CIFAR-10 from the shared training JPEGs: {result['train_images']} "
             "training images (a seeded subset), 5,000 other images held out as the test split for every row. "
             f"Float training: the `cifar10-mobilenetv2` preset with {result['epochs']} epochs at lr "
             f"{result['lr']}; 1 bit: the `cifar10-cpu` preset (5 epochs), every layer the default plan binarizes.",
             "", "| model | test accuracy (%) | artifact bytes | seconds |", "|---|---|---|---|",
             f"| ImageNet MobileNetV2 fine-tuned (float) | {100 * tuned['metrics']['test_accuracy']:.1f} | | "
             f"{tuned['seconds']} |",
             f"| the same network from scratch (float) | {100 * scratch['metrics']['test_accuracy']:.1f} | | "
             f"{scratch['seconds']} |"]
    for method, run in result["quantized"].items():
        m = run["metrics"]
        lines.append(f"| `mltk quantize --bits 1 mobilenet.pt` --method {method} | {100 * m['test_accuracy']:.1f} "
                     f"(float parent {100 * m['fp_test_accuracy']:.1f}) | {m['size_bytes']:,} "
                     f"(1/{m['size_ratio']:.1f}) | {run['seconds']} |")
    commands = [result["imported"]["command"], tuned["command"], scratch["command"],
                'python -c "torch.save(load_classifier(REF).model.net.state_dict(), \'mobilenet.pt\')"',
                *(run["command"] for run in result["quantized"].values())]
    work, shared = str(result.get("work", "")), str(TFLITE.parents[2])
    commands = [c.replace(shared, "../shared/data").replace(work, "WORK") if work else c for c in commands]
    lines += ["", "```", *commands, "```", "",
              "WORK is the benchmark's work folder (`--work`, default /tmp/mltk-bench-quantize-pretrained). "
              "Fine-tuning re-anchored the imported network's 52 folded BatchNorms on 256 training images; "
              "without that (the first run of this benchmark) train mode silenced the network and fine-tuning "
              "stayed at chance (9.6%). Both 1-bit runs use the `cifar10-cpu` preset as it is: BiTAT with "
              "XNOR-Net's activations, and MobileNetV2's branch gain (0.01, `quant.branch_gain`). Before the "
              "gain, with BiTAT on ReActNet's activations (the preset's choice then), the same float parent gave "
              "33.8% (xnor) and 23.3% (bitat). One seed, one short budget: figures to show the path works end to "
              "end, not the method's ceiling.", ""]
    (RESULTS / "quantize_pretrained.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/mltk-bench-quantize-pretrained"))
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--methods", nargs="+", default=["xnor", "bitat"])
    args = parser.parse_args()
    if not TFLITE.exists():
        raise SystemExit(f"{TFLITE} not found: this benchmark needs the shared data")
    args.work.mkdir(parents=True, exist_ok=True)
    result = run(args.work, args.train_images, args.epochs, args.lr, args.methods)
    (RESULTS / "quantize_pretrained.json").write_text(json.dumps(result, indent=1))
    write_markdown(result)


if __name__ == "__main__":
    main()
