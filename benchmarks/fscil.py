"""FSCIL benchmark: SoftNet against HardNet, dense fine-tuning and frozen + NCM on the CPU protocol.

    OMP_NUM_THREADS=2 python benchmarks/fscil.py --seeds 0 1 2 --capacities 0.5 0.9 \
        --data /work/shared/data/cifar10/cifar10_train_jpg.zip --out /tmp/fscil-bench.json

Every run is the real ``softnet`` recipe (``run_recipe``, preset ``cifar10-cpu``)
with ``method=...`` and ``seed=...`` (the seed also picks the shots); only the
dataset read is shared between runs (the 50,000-JPEG zip is decoded once per
process instead of once per run). Then, on the seed-0 SoftNet artifact:

* the mechanism: base-session vs final weights of the trained layers (major entries bit-identical, how
  many minor entries moved), and the old prototypes before and after a replay of the sessions;
* speed: seconds per base epoch of the masked network against the same network without masks (measured
  side by side, interleaved, same batches), and seconds per incremental session.

Writes one JSON document; benchmarks/results/fscil.md is written by hand from it.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import mltk.engines.fscil.sessions_runner as runner_module
from mltk.core import config
from mltk.core.catalog import get_recipe, preset_path
from mltk.core.console import Reporter
from mltk.core.registry import Registry
from mltk.core.run_recipe import run_recipe
from mltk.data.splits import load_splits
from mltk.engines.fscil.artifact import load_fscil
from mltk.engines.fscil.config import FscilConfig
from mltk.engines.fscil.protocols import replay_sessions
from mltk.engines.fscil.sessions_runner import SessionRunner, build_network, load_fscil_data

METHODS = ("softnet", "hardnet", "finetune", "ncm")


def run(overrides: list[str], home: Path) -> dict:
    entry = get_recipe("softnet")
    cfg = config.resolve(FscilConfig, preset=preset_path("softnet", "cifar10-cpu"), overrides=overrides)
    started = time.perf_counter()
    results = run_recipe(entry, cfg, resume=None, runs_root=home / "runs", registry=Registry(home),
                         reporter=Reporter("quiet"))
    return {"overrides": overrides, "metrics": results["metrics"], "artifact": results["artifact"],
            "seconds": round(time.perf_counter() - started, 1)}


def mechanism(ref: str, home: Path) -> dict:
    loaded = load_fscil(str(Registry(home).resolve(ref).path))
    cfg = config.build(FscilConfig, loaded.card["config"])
    data = load_fscil_data(cfg)
    runner = SessionRunner(cfg, data, loaded.model, torch.device("cpu"))
    layers = dict(loaded.model.named_modules())
    per_layer = {}
    for name in runner.trained_layers:
        major = layers[name].major()
        before, after = loaded.base_weights[name], layers[name].weight.detach()
        per_layer[name] = {"major_entries": int(major.sum()), "major_identical": bool(torch.equal(before[major], after[major])),
                           "minor_entries": int((~major).sum()),
                           "minor_moved": int((before[~major] != after[~major]).sum()),
                           "minor_mean_abs_change": float((before[~major] - after[~major]).abs().mean())}
    base = len(data.plan.base_classes)
    old = loaded.model.prototypes[:base].clone()
    results, matches = replay_sessions(cfg, runner, loaded.base_weights, Reporter("quiet"))
    return {"layers": per_layer, "old_prototypes_identical_after_replay": bool(torch.equal(old, loaded.model.prototypes[:base])),
            "replay_matches_training": matches, "replayed_accuracy": [r["accuracy"] for r in results]}


def speed(overrides: list[str], steps: int) -> dict:
    """Seconds per base epoch, masked (soft) vs dense, same batches, interleaved; seconds per session."""
    timings = {"soft": [], "none": []}
    runners = {}
    for method, masking in (("softnet", "soft"), ("finetune", "none")):
        cfg = config.resolve(FscilConfig, preset=preset_path("softnet", "cifar10-cpu"),
                             overrides=[*overrides, f"method={method}"])
        data = load_fscil_data(cfg)
        model = build_network(cfg, data)
        runners[masking] = (cfg, SessionRunner(cfg, data, model, torch.device("cpu")),
                            torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    cfg = runners["soft"][0]
    per_epoch = len(runners["soft"][1].base_indices) // cfg.train.batch_size
    for step in range(steps + 1):
        for masking, (_, runner, optimizer) in runners.items():
            runner.model.train()
            started = time.perf_counter()
            loss, _, _ = runner.base_loss(step, per_epoch, runner.model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step:  # the first step warms up
                timings[masking].append(time.perf_counter() - started)
    soft, dense = statistics.median(timings["soft"]), statistics.median(timings["none"])
    session_seconds = {}
    for masking, (cfg_m, runner, _) in runners.items():
        runner.close_session(0)
        started = time.perf_counter()
        params = runner.open_session(1)
        optimizer = torch.optim.SGD(params, lr=cfg_m.incremental.lr, momentum=0.9)
        for step in range(cfg_m.incremental.steps):
            loss, _, _ = runner.session_loss(10_000 + step, runner.model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        runner.close_session(1)
        session_seconds[masking] = time.perf_counter() - started
    return {"steps_timed": steps, "median_step_s": {"masked": soft, "dense": dense}, "ratio_masked_over_dense": soft / dense,
            "s_per_base_epoch": {"masked": soft * per_epoch, "dense": dense * per_epoch},
            "s_per_incremental_session_incl_scoring": session_seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="the CIFAR-10 JPEG zip (cifar10_train_jpg.zip)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--capacities", type=float, nargs="*", default=[0.5, 0.9], help="SoftNet c besides the preset's")
    parser.add_argument("--speed-steps", type=int, default=10)
    parser.add_argument("--out", required=True)
    parser.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for every run")
    args = parser.parse_args()
    # Decode the zip once for every run of this process.
    runner_module.load_splits = functools.lru_cache(maxsize=2)(load_splits)
    home = Path(tempfile.mkdtemp(prefix="fscil-bench-"))
    common = [f"data=imagefolder:{args.data}", *args.set]
    report: dict = {"common": common, "torch_threads": torch.get_num_threads(), "runs": []}
    out = Path(args.out)
    for seed in args.seeds:
        for method in args.methods:
            report["runs"].append(run([*common, f"method={method}", f"seed={seed}", f"sessions.seed={seed}",
                                       f"name={method}-s{seed}"], home))
            out.write_text(json.dumps(report, indent=1))
            print(json.dumps(report["runs"][-1]), flush=True)
    for capacity in args.capacities:
        report["runs"].append(run([*common, "method=softnet", "seed=0", "sessions.seed=0", f"model.capacity={capacity}",
                                   f"name=softnet-c{capacity}"], home))
        out.write_text(json.dumps(report, indent=1))
        print(json.dumps(report["runs"][-1]), flush=True)
    if "softnet" in args.methods:
        report["mechanism"] = mechanism(f"softnet-s{args.seeds[0]}", home)
        out.write_text(json.dumps(report, indent=1))
    if args.speed_steps:
        report["speed"] = speed(common, args.speed_steps)
        out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("speed", "mechanism") if k in report}, indent=1))


if __name__ == "__main__":
    main()
