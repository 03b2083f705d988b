"""CPU latency per batch: the float network against its deployed binarized artifact (one thread).

Both networks are loaded the way ``mltk eval`` loads them; the binarized one
runs sign activations and float convolutions on its unpacked +1/-1 weights
(mltk has no bit-packed kernel), so this measures what a user gets today.
Prints one JSON document; ``benchmarks/quantize.py --section latency`` runs it.

    MLTK_HOME=... python benchmarks/quantize_latency.py --float REF --binary REF
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from quantize_xnor_kernel import measure as measure_kernel

import mltk.engines  # noqa: F401  (registers the quantized classifier kinds)
from mltk.nn.artifacts import load_classifier


def median_ms(models, images, repeats: int) -> list[float]:
    """Median ms per forward pass of each model, the models timed in turn within every repeat (so that
    load from other processes on a shared CPU falls on all of them alike)."""
    times = [[] for _ in models]
    with torch.no_grad():
        for model in models:
            model(images)
        for _ in range(repeats):
            for model, own in zip(models, times, strict=True):
                start = time.perf_counter()
                model(images)
                own.append(time.perf_counter() - start)
    return [1000 * sorted(own)[len(own) // 2] for own in times]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--float", dest="float_ref", required=True)
    parser.add_argument("--binary", dest="binary_ref", required=True)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    float_model = load_classifier(args.float_ref)
    binary_model = load_classifier(args.binary_ref)
    shape = float_model.arch_args
    images = torch.rand(args.batch, shape["in_channels"], shape["image_size"], shape["image_size"],
                        generator=torch.Generator().manual_seed(0))
    float_ms, binary_ms = median_ms([float_model.model.eval(), binary_model.model.eval()], images, args.repeats)
    rows = [{"label": f"float {float_model.source} ({float_model.card['arch']['arch']}, "
                      f"width {shape.get('width_mult')})", "ms": float_ms},
            {"label": f"binarized {binary_model.source}, deployed form (unpacked weights, float convs)",
             "ms": binary_ms}]
    print(json.dumps({"description": f"Median of {args.repeats} forward passes of a batch of {args.batch} "
                                     f"{shape['image_size']}x{shape['image_size']} images, one thread, the two "
                                     "networks timed in turn.",
                      "rows": rows, "kernel": measure_kernel(args.repeats)}, indent=2))


if __name__ == "__main__":
    main()
