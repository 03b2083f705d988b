"""Masked image modelling on this machine: what benchmarks/results/mim.md reports.

Sections (each stores its figures in $MLTK_MIM_WORK/results-<section>.json, default /tmp/mltk-mim; ``--report``
assembles benchmarks/results/mim.md and mim.json from whatever sections have run):

* ``digits``: the default presets (MAE, RC-MAE with the cosine and with the constant momentum) on
  the embedded 8x8 digits, several seeds; k-NN at the end of training and a linear probe.
* ``cifar``: MAE and RC-MAE pre-trained with the same budget (steps, batch, schedule) on CIFAR-10
  (the JPEG zip, 5,000 held out as test), ViT-Tiny patch 4; linear-probe and k-NN accuracy of each
  at two points of training, from the run's checkpoints.
* ``step-cost``: time per training step and peak memory of MAE, RC-MAE and a full-image-teacher
  self-distillation step, and of our MAE step against Hugging Face's ViTMAEForPreTraining
  (benchmarks/mim_step_cost.py, each measurement in a fresh process).
* ``sdft``: the MAE from ``cifar`` carried to a small MNIST set: the initial model, the further
  pre-trained teacher and the self-distilled student compared by linear probe, and their distance
  from the initial weights.

    flock /tmp/mltk-bench.lock python benchmarks/mim.py --section digits --seeds 3
    flock /tmp/mltk-bench.lock python benchmarks/mim.py --section step-cost --batch 128 --steps 5
    flock /tmp/mltk-bench.lock python benchmarks/mim.py --section cifar --batch 128 --steps 200 --eval-every 100
    flock /tmp/mltk-bench.lock python benchmarks/mim.py --section sdft --steps 100
    python benchmarks/mim.py --report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mim_data import CACHE, cifar10_npz, mnist_npz  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(os.environ.get("MLTK_MIM_WORK", CACHE))  # registry, runs and section results of this benchmark
HOME, RUNS = WORK / "home", WORK / "runs"


def environment() -> dict:
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "transformers": transformers.__version__,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def mltk(*args: str) -> tuple[dict, str]:
    """Run ``mltk ARGS --format json`` in a child process; (its JSON, the command as typed)."""
    env = dict(os.environ, MLTK_HOME=str(HOME), MLTK_RUNS=str(RUNS), CI="1",
               OMP_NUM_THREADS=str(torch.get_num_threads()))
    command = ["mltk", *args]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mltk", *args, "--format", "json"], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=None)
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed with exit code {proc.returncode}")
    out = json.loads(proc.stdout)
    out["_seconds"] = round(time.perf_counter() - started, 1)
    return out, shlex.join(command)


def save_section(name: str, data: dict) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / f"results-{name}.json").write_text(json.dumps({**data, "environment": environment()}, indent=2))


# ---------------------------------------------------------------- cifar


def evaluate_checkpoint(ckpt_dir: Path, prefix: str, spec: dict, splits, probe_train: int, probe_test: int) -> dict:
    """Linear-probe and k-NN accuracy of the network stored under ``prefix`` in a checkpoint."""
    from mltk.core.runs import Checkpoint
    from mltk.engines.mim.encoder import load_strict
    from mltk.engines.mim.features import (
        extract_features,
        knn_predict,
        linear_probe,
        reconstruction_loss,
        subset_indices,
    )
    from mltk.nn.mae import build_mae

    tensors = Checkpoint(ckpt_dir).load_model_state()
    if prefix:
        tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    model = build_mae(spec)
    load_strict(model, tensors, str(ckpt_dir))
    model.eval()
    device = torch.device("cpu")
    chosen = subset_indices(len(splits.train), probe_train, 0)
    test_images, test_labels = splits.test.images[:probe_test], splits.test.labels[:probe_test]
    started = time.perf_counter()
    train_f = extract_features(model.features, splits.train.images[chosen], batch_size=500, device=device)
    test_f = extract_features(model.features, test_images, batch_size=500, device=device)
    probe = linear_probe(train_f, splits.train.labels[chosen], test_f, test_labels)
    knn = knn_predict(train_f, splits.train.labels[chosen], test_f, num_classes=10)
    return {"linear_probe": probe["accuracy"], "linear_probe_train": probe["train_accuracy"],
            "knn": float((knn == test_labels).double().mean()),
            "test_recon_loss": reconstruction_loss(model, test_images, batch_size=500, device=device),
            "eval_seconds": round(time.perf_counter() - started, 1)}


def section_cifar(steps: int, eval_every: int, batch: int, probe_train: int, probe_test: int) -> None:
    from mltk.data import DataSpec, load_splits
    from mltk.engines.mim.encoder import load_mae

    npz = cifar10_npz()
    common = ["--preset", "cifar10", f"data=npz:{npz}", "data.test_holdout=5000", f"train.batch_size={batch}",
              f"train.max_steps={steps}",
              "optim.warmup_steps=20", f"train.ckpt_every={eval_every}", "train.keep_checkpoints=20",
              "eval.knn_train_images=0", "eval.test_images=1000", "train.log_every=25"]
    splits = load_splits(DataSpec(name=f"npz:{npz}", test_holdout=5000))
    out = {"steps": steps, "batch": batch, "eval_every": eval_every, "probe_train_images": probe_train,
           "probe_test_images": min(probe_test, len(splits.test)), "runs": {}}
    for recipe in ("mae", "rc-mae"):
        result, command = mltk("train", recipe, *common, f"name=bench-{recipe}-cifar10")
        os.environ["MLTK_HOME"] = str(HOME)
        spec = load_mae(result["artifact"]).mae.spec
        run_dir = Path(result["run_dir"])
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        points = {}
        for step in range(eval_every, steps + 1, eval_every):
            ckpt = run_dir / "ckpt" / f"step-{step}"
            networks = {"model": ""} if recipe == "mae" else {"teacher": "teacher.", "student": "student."}
            points[step] = {role: evaluate_checkpoint(ckpt, prefix, spec, splits, probe_train, probe_test)
                            for role, prefix in networks.items()}
        out["runs"][recipe] = {"command": command, "artifact": result["artifact"], "wall_time_s": result["wall_time_s"],
                               "train_seconds_per_step": _seconds_per_step(metrics, batch), "points": points,
                               "final_metrics": result["metrics"], "train_log": metrics}
        save_section("cifar", out)


def _seconds_per_step(metrics: list[dict], batch: int) -> float:
    """Median seconds per step over the logged blocks (from samples/s at the run's batch)."""
    rates = sorted(line["samples_per_s"] for line in metrics)
    return round(batch / rates[len(rates) // 2], 3)


# ---------------------------------------------------------------- digits


def section_digits(seeds: int) -> None:
    """The default presets on the embedded digits: MAE, RC-MAE (cosine and constant momentum), several seeds."""
    variants = {"mae": ["mae"], "rc-mae": ["rc-mae"],
                "rc-mae-constant": ["rc-mae", "teacher.momentum_schedule=constant"]}
    out = {"seeds": seeds, "runs": {}}
    for variant, args in variants.items():
        for seed in range(seeds):
            trained, command = mltk("train", *args, f"seed={seed}", f"name=bench-{variant}-digits")
            probe, probe_command = mltk("eval", trained["artifact"], "--protocol", "linear-probe")
            out["runs"].setdefault(variant, []).append(
                {"seed": seed, "command": command, "probe_command": probe_command, "artifact": trained["artifact"],
                 "knn": trained["metrics"]["knn_accuracy"], "linear_probe": probe["metrics"]["accuracy"],
                 "test_recon_loss": trained["metrics"]["test_recon_loss"], "wall_time_s": trained["wall_time_s"]})
            save_section("digits", out)


# ---------------------------------------------------------------- step cost


def section_step_cost(batch: int, steps: int) -> None:
    helper = Path(__file__).resolve().parent / "mim_step_cost.py"
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    out = {"batch": batch, "steps": steps, "variants": {}}
    for variant in ("mae", "rc-mae", "full-teacher", "hf-vitmae", "mae", "hf-vitmae"):
        proc = subprocess.run([sys.executable, str(helper), "--variant", variant, "--batch", str(batch),
                               "--steps", str(steps)], capture_output=True, text=True, check=True, env=env)
        measured = json.loads(proc.stdout)
        out["variants"].setdefault(variant, []).append(measured)
        save_section("step-cost", out)


# ---------------------------------------------------------------- sdft


def section_sdft(steps: int) -> None:
    cifar = json.loads((WORK / "results-cifar.json").read_text())
    init = cifar["runs"]["mae"]["artifact"]
    npz = mnist_npz()
    result, command = mltk("train", "sdft", "--preset", "cifar10-to-mnist", f"init={init}", f"data=npz:{npz}",
                           f"train.steps={steps}", "eval.knn_train_images=2000", "eval.test_images=0",
                           "train.log_every=25", "name=bench-sdft-mnist")
    os.environ["MLTK_HOME"] = str(HOME)
    from mltk.core.registry import Registry

    card = Registry(HOME).resolve(result["artifact"]).card()
    probes = {}
    for role, ref in (("init", init), ("teacher", card["teacher"]), ("student", result["artifact"])):
        evaluated, eval_command = mltk("eval", ref, "--protocol", "linear-probe", "--data", f"npz:{npz}")
        knn, knn_command = mltk("eval", ref, "--protocol", "knn", "--data", f"npz:{npz}")
        probes[role] = {"ref": ref, "linear_probe": evaluated["metrics"]["accuracy"],
                        "knn": knn["metrics"]["accuracy"], "commands": [eval_command, knn_command]}
    save_section("sdft", {"command": command, "steps_per_stage": steps, "init": init,
                          "metrics": result["metrics"], "wall_time_s": result["wall_time_s"], "probes": probes})


# ---------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", choices=("digits", "cifar", "step-cost", "sdft"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 beats 2 on these 2 shared cores: OpenMP spin-waits under load)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--probe-train", type=int, default=5000, help="train images of each probe / k-NN memory")
    parser.add_argument("--probe-test", type=int, default=2000, help="held-out test images each probe scores")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    if args.section == "digits":
        section_digits(args.seeds)
    elif args.section == "cifar":
        section_cifar(args.steps, args.eval_every, args.batch, args.probe_train, args.probe_test)
    elif args.section == "step-cost":
        section_step_cost(args.batch, args.steps)
    elif args.section == "sdft":
        section_sdft(args.steps)
    if args.report:
        from mim_report import write_report

        write_report(WORK, RESULTS)


if __name__ == "__main__":
    main()
