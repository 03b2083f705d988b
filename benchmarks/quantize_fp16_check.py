"""Does storing the per-channel vectors as float16 change the accuracy of quantized artifacts? Measured directly.

For every artifact named, loads its deployed network the way ``mltk eval``
does, scores it on its test split, then writes its tensors again with
``deployed_tensors(..., vector_dtype="float16")`` (the artifact path of
``quant.vector_dtype=float16``), loads them back into a fresh deployed network
and scores that. Prints one JSON document: per artifact, both test accuracies,
the number of test predictions that differ, the largest logit difference, and
the bytes of both weight files. ``benchmarks/quantize.py --section fp16`` runs
it over the artifacts of the digits section.

    MLTK_HOME=... python benchmarks/quantize_fp16_check.py REF [REF ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch
from safetensors.torch import load as load_bytes

import mltk.engines  # noqa: F401  (registers the quantized classifier kinds)
from mltk.core.tensor_files import safetensors_bytes
from mltk.data import DataSpec, load_splits
from mltk.engines.quantize.artifact import build_deployed
from mltk.engines.quantize.network import deployed_tensors, load_deployed_tensors
from mltk.nn.artifacts import load_classifier


@torch.no_grad()
def predictions(model, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(images[i:i + 512].float() / 255) for i in range(0, len(images), 512)])


def check(ref: str) -> dict:
    loaded = load_classifier(ref)
    card = loaded.card
    plan = card["quantization"]["plan"]
    known = {f.name for f in dataclasses.fields(DataSpec)}
    spec = DataSpec(**{k: v for k, v in loaded.task["data"].items() if k in known})
    test = load_splits(spec).test
    model = loaded.model.eval()
    full = deployed_tensors(model, plan, vector_dtype="float32")
    half = deployed_tensors(model, plan, vector_dtype="float16")
    again = build_deployed(card, ref)
    load_deployed_tensors(again, plan, load_bytes(safetensors_bytes(half)), ref)
    again.eval()
    a, b = predictions(model, test.images), predictions(again, test.images)
    labels = test.labels
    return {"artifact": ref, "test_images": len(labels),
            "accuracy_float32": float((a.argmax(1) == labels).float().mean()),
            "accuracy_float16": float((b.argmax(1) == labels).float().mean()),
            "predictions_changed": int((a.argmax(1) != b.argmax(1)).sum()),
            "max_logit_difference": float((a - b).abs().max()),
            "bytes_float32": len(safetensors_bytes(full)), "bytes_float16": len(safetensors_bytes(half))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("refs", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps({"rows": [check(ref) for ref in args.refs]}, indent=2))


if __name__ == "__main__":
    main()
