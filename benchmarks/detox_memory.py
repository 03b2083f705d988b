"""Peak memory of one detox method, alone in this process (a helper of benchmarks/detox.py).

    python benchmarks/detox_memory.py adlm-gpt2-tiny-toxic --prompts 8 --samples 25

Prints one JSON object: the process's peak resident set while loading the
method and generating (``peak_rss_mb``, the imports' transient peak excluded),
the same before generating (``loaded_rss_mb``), that peak over the resident set
after importing torch and transformers (``method_rss_mb``), and the weights
decoding reads (``weights_mb``). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch


def status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> None:
    """Make VmHWM the current RSS, so the peak measured excludes the transient peak of the imports."""
    Path("/proc/self/clear_refs").write_text("5")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ref")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=25)
    args = parser.parse_args()
    import transformers  # noqa: F401  (imported before the baseline is read: the method is what is measured)

    from mltk.data.text.sources import read_prompts
    from mltk.engines.detox.generation import Sampling, generate
    from mltk.engines.detox.methods import load_method

    reset_peak()
    baseline = status_mb("VmRSS")
    method = load_method(args.ref)
    loaded = status_mb("VmHWM")
    data = Path(os.environ.get("MLTK_DATA", "/work/shared/data"))
    prompts = [p.text for p in read_prompts(data / "toxicity/realtoxicityprompts_decodingtrust_subset/"
                                                    "nontoxic.jsonl")[:args.prompts]]
    generate(method.decoder, method.tokenizer, prompts, n=args.samples, sampling=Sampling(max_new_tokens=20), seed=0,
             device=torch.device("cpu"), context=method.context)
    peak = status_mb("VmHWM")
    print(json.dumps({"peak_rss_mb": peak, "loaded_rss_mb": loaded, "method_rss_mb": peak - baseline,
                      "weights_mb": method.weight_bytes() / 2 ** 20, "added_parameters": method.added_parameters}))


if __name__ == "__main__":
    main()
