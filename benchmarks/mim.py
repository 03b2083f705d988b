"""Masked image modelling on this machine: what benchmarks/results/mim.md reports.

Sections (each stores its figures in $MLTK_MIM_WORK/results-<section>.json, default /tmp/mltk-mim; ``--report``
assembles benchmarks/results/mim.md and mim.json from whatever sections have run):

* ``digits``: the default presets (MAE, RC-MAE with the cosine and with the constant momentum) on
  the embedded 8x8 digits, several seeds; k-NN at the end of training and a linear probe.
* ``cifar``: MAE and RC-MAE pre-trained with the same budget (steps, batch, schedule) on CIFAR-10
  (the JPEG zip, 5,000 held out as test), ViT-Tiny patch 4; linear-probe and k-NN accuracy of each
  at two points of training, from the run's checkpoints.
* ``step-memory`` / ``step-time``: peak memory (each variant alone in a fresh process) and time per
  training step (all side by side, alternating in one process) of MAE, RC-MAE, a full-image-teacher
  self-distillation step and Hugging Face's ViTMAEForPreTraining (benchmarks/mim_step_cost.py).
* ``sdft``: the MAE from ``cifar`` carried to a small MNIST set: the initial model, the further
  pre-trained teacher and the self-distilled student compared by linear probe, and their distance
  from the initial weights.

Timings under the shared benchmark lock; accuracy runs on one thread (what results/mim.md reports):

    flock /tmp/mltk-bench.lock python benchmarks/mim.py --section step-memory --batch 64 --steps 1
    flock /tmp/mltk-bench.lock python benchmarks/mim.py --section step-time --batch 64 --steps 6
    OMP_NUM_THREADS=1 python benchmarks/mim.py --section cifar --batch 64 --steps 120 --eval-every 60 \
        --probe-train 1000 --probe-test 1000 --momentum 0.99 --momentum-schedule constant
    OMP_NUM_THREADS=1 python benchmarks/mim.py --section cifar-untrained --probe-train 1000 --probe-test 1000
    OMP_NUM_THREADS=1 python benchmarks/mim.py --section sdft --steps 60 --batch 32 --lr 1e-3 \
        --probe-train 1000 --probe-test 1000
    OMP_NUM_THREADS=1 python benchmarks/mim.py --section digits --seeds 3     (not run for results/mim.md)
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


def _git_state() -> str:
    """HEAD and whether the working tree differs from it, to tell measurements of different code apart."""
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "mltk"], cwd=root, capture_output=True, text=True)
    return head.strip() + (" + uncommitted changes under mltk/" if dirty.stdout.strip() else "")


def save_section(name: str, data: dict) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / f"results-{name}.json").write_text(json.dumps({**data, "environment": environment()}, indent=2))


# ---------------------------------------------------------------- cifar


def evaluate_checkpoint(ckpt_dir: Path, prefix: str, spec: dict, splits, probe_train: int, probe_test: int) -> dict:
    """Linear-probe and k-NN accuracy of the network stored under ``prefix`` in a checkpoint."""
    from mltk.core.runs import Checkpoint
    from mltk.engines.mim.encoder import load_strict
    from mltk.nn.encoders.mae import build_mae

    tensors = Checkpoint(ckpt_dir).load_model_state()
    if prefix:
        tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    model = build_mae(spec)
    load_strict(model, tensors, str(ckpt_dir))
    return evaluate_model(model, splits, probe_train, probe_test)


def evaluate_model(model, splits, probe_train: int, probe_test: int) -> dict:
    """Linear probe, k-NN and held-out reconstruction of an MAE, on the images every CIFAR point uses."""
    from mltk.nn.encoders.evaluation import (
        extract_features,
        knn_predict,
        linear_probe,
        reconstruction_loss,
        subset_indices,
    )

    model.eval()
    device = torch.device("cpu")
    chosen = subset_indices(len(splits.train), probe_train, 0)
    # A seeded subset, not the first images: the held-out split keeps the zip's class order.
    held_out = subset_indices(len(splits.test), probe_test, 1)
    test_images, test_labels = splits.test.images[held_out], splits.test.labels[held_out]
    started = time.perf_counter()
    train_f = extract_features(model.features, splits.train.images[chosen], batch_size=500, device=device)
    test_f = extract_features(model.features, test_images, batch_size=500, device=device)
    probe = linear_probe(train_f, splits.train.labels[chosen], test_f, test_labels)
    knn = knn_predict(train_f, splits.train.labels[chosen], test_f, num_classes=10)
    return {"linear_probe": probe["accuracy"], "linear_probe_train": probe["train_accuracy"],
            "knn": float((knn == test_labels).double().mean()),
            "test_recon_loss": reconstruction_loss(model, test_images, batch_size=500, device=device),
            "eval_seconds": round(time.perf_counter() - started, 1)}


def section_cifar(steps: int, eval_every: int, batch: int, probe_train: int, probe_test: int, *, lr: float,
                  warmup: int, momentum: float, momentum_schedule: str) -> None:
    from mltk.data import DataSpec, load_splits
    from mltk.engines.mim.encoder import load_mae

    npz = cifar10_npz()
    common = ["--preset", "cifar10", f"data=npz:{npz}", "data.test_holdout=5000", f"train.batch_size={batch}",
              f"train.max_steps={steps}", f"optim.lr={lr}",
              f"optim.warmup_steps={warmup}", f"train.ckpt_every={eval_every}", "train.keep_checkpoints=20",
              "eval.knn_train_images=0", "eval.test_images=1000", "train.log_every=25"]
    teacher = [f"teacher.momentum={momentum}", f"teacher.momentum_schedule={momentum_schedule}"]
    splits = load_splits(DataSpec(name=f"npz:{npz}", test_holdout=5000))
    out = {"steps": steps, "batch": batch, "eval_every": eval_every, "lr": lr, "warmup_steps": warmup,
           "momentum": momentum, "momentum_schedule": momentum_schedule, "probe_train_images": probe_train,
           "probe_test_images": min(probe_test, len(splits.test)), "runs": {}}
    for recipe in ("mae", "rc-mae"):
        extra = teacher if recipe == "rc-mae" else []
        result, command = mltk("train", recipe, *common, *extra, f"name=bench-{recipe}-cifar10")
        os.environ["MLTK_HOME"] = str(HOME)
        spec = load_mae(result["artifact"]).mae.spec
        run_dir = Path(result["run_dir"])
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        points = {}
        for step in range(eval_every, steps + 1, eval_every):
            ckpt = run_dir / "ckpt" / f"step-{step}"
            # The student (not the downstream network) is scored at the last point only: each scoring costs
            # a feature pass over every probe image, about a minute and a half on one shared core.
            networks = ({"model": ""} if recipe == "mae" else
                        {"teacher": "teacher.", **({"student": "student."} if step == steps else {})})
            points[step] = {role: evaluate_checkpoint(ckpt, prefix, spec, splits, probe_train, probe_test)
                            for role, prefix in networks.items()}
        out["runs"][recipe] = {"command": command, "artifact": result["artifact"], "wall_time_s": result["wall_time_s"],
                               "train_seconds_per_step": _seconds_per_step(metrics, batch), "points": points,
                               "final_metrics": result["metrics"], "train_log": metrics}
        save_section("cifar", out)


def section_cifar_untrained(probe_train: int, probe_test: int) -> None:
    """The reference row: the same architecture untrained (seed 0), scored exactly like the trained points."""
    from mltk.data import DataSpec, load_splits
    from mltk.engines.mim.encoder import load_mae
    from mltk.nn.encoders.mae import build_mae

    path = WORK / "results-cifar.json"
    out = json.loads(path.read_text())
    out.pop("environment", None)
    if (out["probe_train_images"], out["probe_test_images"]) != (probe_train, probe_test):
        raise SystemExit(f"--probe-train/--probe-test must match the cifar section's "
                         f"{out['probe_train_images']}/{out['probe_test_images']}")
    os.environ["MLTK_HOME"] = str(HOME)
    spec = load_mae(out["runs"]["mae"]["artifact"]).mae.spec
    splits = load_splits(DataSpec(name=f"npz:{cifar10_npz()}", test_holdout=5000))
    torch.manual_seed(0)
    out["untrained"] = evaluate_model(build_mae(spec), splits, probe_train, probe_test)
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


def section_step_cost(batch: int, steps: int, part: str) -> None:
    """``memory``: each variant alone in a fresh process (its peak RSS and activations are its own);
    ``time``: all four variants timed side by side, in alternation, in one process."""
    helper = Path(__file__).resolve().parent / "mim_step_cost.py"
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    path = WORK / "results-step-cost.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    out.pop("environment", None)
    if part == "memory":
        out["memory"] = {"batch": batch, "steps": steps, "variants": {}}
        for variant in ("mae", "rc-mae", "full-teacher", "hf-vitmae"):
            command = [sys.executable, str(helper), "--variant", variant, "--batch", str(batch), "--steps", str(steps)]
            proc = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
            out["memory"]["variants"][variant] = json.loads(proc.stdout)
            save_section("step-cost", out)
    else:
        command = [sys.executable, str(helper), "--interleave", "mae,rc-mae,full-teacher,hf-vitmae",
                   "--batch", str(batch), "--steps", str(steps)]
        proc = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
        history = out.setdefault("time_history", [])  # earlier measurements stay, e.g. from before a code change
        if "time_previous" in out:
            history.append(out.pop("time_previous"))
        if "time" in out:
            history.append(out["time"])
        out["time"] = json.loads(proc.stdout)
        out["time"]["git_commit"] = _git_state()
        save_section("step-cost", out)


# ---------------------------------------------------------------- sdft


def probe_artifact(ref: str, splits, probe_train: int, probe_test: int) -> dict:
    """Linear-probe and k-NN accuracy of an encoder artifact's frozen features on a labelled target
    (its images fitted to the encoder's input, as ``mltk eval REF --data`` does), in this process."""
    from mltk.data.images.fit_images import fit_images
    from mltk.engines.mim.encoder import load_mae
    from mltk.nn.encoders.evaluation import (
        extract_features,
        knn_predict,
        linear_probe,
        subset_indices,
    )

    encoder = load_mae(ref).to(torch.device("cpu"))
    train_rows = subset_indices(len(splits.train), probe_train, 0)
    test_rows = subset_indices(len(splits.test), probe_test, 1)
    fit = {"channels": encoder.in_channels, "size": encoder.image_size}
    started = time.perf_counter()
    train_f = extract_features(encoder.features, fit_images(splits.train.images[train_rows], **fit), batch_size=500,
                               device=torch.device("cpu"))
    test_f = extract_features(encoder.features, fit_images(splits.test.images[test_rows], **fit), batch_size=500,
                              device=torch.device("cpu"))
    train_labels, test_labels = splits.train.labels[train_rows], splits.test.labels[test_rows]
    probe = linear_probe(train_f, train_labels, test_f, test_labels)
    knn = knn_predict(train_f, train_labels, test_f, num_classes=splits.train.num_classes)
    return {"ref": ref, "linear_probe": probe["accuracy"], "linear_probe_train": probe["train_accuracy"],
            "knn": float((knn == test_labels).double().mean()), "eval_seconds": round(time.perf_counter() - started, 1)}


def section_sdft(steps: int, batch: int, lr: float, probe_train: int, probe_test: int) -> None:
    from mltk.core.registry import Registry
    from mltk.data import DataSpec, load_splits

    cifar = json.loads((WORK / "results-cifar.json").read_text())
    init = cifar["runs"]["mae"]["artifact"]
    npz = mnist_npz()
    # The end-of-run k-NN of all three networks is left to the probes below (same images, one pass each).
    result, command = mltk("train", "sdft", "--preset", "cifar10-to-mnist", f"init={init}", f"data=npz:{npz}",
                           f"train.steps={steps}", f"train.batch_size={batch}", f"optim.lr={lr}",
                           "eval.knn_train_images=0", "eval.test_images=500", "train.log_every=10",
                           "name=bench-sdft-mnist")
    os.environ["MLTK_HOME"] = str(HOME)
    card = Registry(HOME).resolve(result["artifact"]).card()
    splits = load_splits(DataSpec(name=f"npz:{npz}"))
    probes = {role: probe_artifact(ref, splits, probe_train, probe_test)
              for role, ref in (("init", init), ("teacher", card["teacher"]), ("student", result["artifact"]))}
    train_log = [json.loads(line) for line in (Path(result["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    save_section("sdft", {"command": command, "steps_per_stage": steps, "batch": batch, "lr": lr, "init": init,
                          "train_log": train_log,
                          "probe_train_images": min(probe_train, len(splits.train)),
                          "probe_test_images": min(probe_test, len(splits.test)),
                          "metrics": result["metrics"], "wall_time_s": result["wall_time_s"], "probes": probes})


# ---------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", choices=("digits", "cifar", "cifar-untrained", "step-memory", "step-time", "sdft"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 beats 2 on these 2 shared cores: OpenMP spin-waits under load)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--probe-train", type=int, default=5000, help="train images of each probe / k-NN memory")
    parser.add_argument("--probe-test", type=int, default=2000, help="held-out test images each probe scores")
    parser.add_argument("--lr", type=float, default=1e-3, help="cifar: peak learning rate of both recipes")
    parser.add_argument("--warmup", type=int, default=20, help="cifar: warm-up steps of both recipes")
    parser.add_argument("--momentum", type=float, default=0.996, help="cifar: RC-MAE's EMA momentum (first step)")
    parser.add_argument("--momentum-schedule", choices=("cosine", "constant"), default="cosine",
                        help="cifar: RC-MAE's momentum schedule")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    if args.section == "digits":
        section_digits(args.seeds)
    elif args.section == "cifar":
        section_cifar(args.steps, args.eval_every, args.batch, args.probe_train, args.probe_test, lr=args.lr,
                      warmup=args.warmup, momentum=args.momentum, momentum_schedule=args.momentum_schedule)
    elif args.section == "cifar-untrained":
        section_cifar_untrained(args.probe_train, args.probe_test)
    elif args.section in ("step-memory", "step-time"):
        section_step_cost(args.batch, args.steps, args.section.removeprefix("step-"))
    elif args.section == "sdft":
        section_sdft(args.steps, args.batch, args.lr, args.probe_train, args.probe_test)
    if args.report:
        from mim_report import write_report

        write_report(WORK, RESULTS)


if __name__ == "__main__":
    main()
