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


def median_ms(model, images, repeats: int) -> float:
    with torch.no_grad():
        model(images)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(images)
            times.append(time.perf_counter() - start)
    times.sort()
    return 1000 * times[len(times) // 2]


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
    rows = [{"label": f"float {float_model.source} ({float_model.card['arch']['arch']}, "
                      f"width {shape.get('width_mult')})", "ms": median_ms(float_model.model.eval(), images,
                                                                          args.repeats)},
            {"label": f"binarized {binary_model.source}, deployed form (unpacked weights, float convs)",
             "ms": median_ms(binary_model.model.eval(), images, args.repeats)}]
    print(json.dumps({"description": f"Median of {args.repeats} forward passes of a batch of {args.batch} "
                                     f"{shape['image_size']}x{shape['image_size']} images, one thread.",
                      "rows": rows, "kernel": measure_kernel(args.repeats)}, indent=2))


if __name__ == "__main__":
    main()
