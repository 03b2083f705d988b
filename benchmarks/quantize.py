"""W1/A1 quantization of MobileNetV2: BiTAT against XNOR-Net and ReActNet, size and latency.

Every number comes from the real command line (``python -m mltk ...`` in a
child process, one thread, ``OMP_NUM_THREADS=1``), and the commands are
written into the results next to the figures.

Sections (each adds itself to benchmarks/results/quantize.json, then the
markdown is rewritten from the whole JSON):

* ``digits``: a float MobileNetV2 (width 0.5, stride-1 stem) trained with
  ``mltk train supervised`` on scikit-learn's 8x8 digits, then W1/A1 with
  every method and BiTAT transform at the same budget (``--preset digits``),
  several seeds; plus binarization without training and 8/4/2-bit uniform.
* ``cifar10``: the same on CIFAR-10 (the JPEG zip in ../shared/data, 5,000
  train images held out as the test split, a seeded subset of the rest for
  training; cached as an npz under the work folder, never in the repo).
* ``size``: bytes on disk of the float and the 1-bit artifact of an
  (untrained; sizes do not depend on training) MobileNetV2 at width 1.0.
* ``latency``: CPU time per batch of the float network against the deployed
  binarized one (unpacked +1/-1 float weights, sign activations), and the
  XNOR-popcount micro-benchmark of ``quantize_xnor_kernel.py``.

* ``convnet``: the same W1/A1 comparison on digits with a ConvNet-3 (width
  64, BatchNorm), a net that W1/A1 QAT trains at this budget.
* ``diagnose``: ``quantize_diagnose.py`` on the digits MobileNetV2 parent
  (which quantizers stop training); ``digits-long``: MobileNetV2 W1/A1 on
  digits with a longer QAT budget; ``digits-adapt``: the same after a float
  adaptation phase with the float shortcuts on (``train.adapt_epochs``);
  ``digits-width``: MobileNetV2 W1/A1 on digits at another width;
  ``diagnose-kinds``: binary inputs by kind of layer (depthwise, expanding,
  projecting) on the width-0.5 and width-1.0 parents.

Run one section at a time (each rewrites quantize.json; accuracy sections with
one thread, the latency section under the shared benchmark lock):

    python benchmarks/quantize.py --section digits --seeds 0 1 2
    python benchmarks/quantize.py --section convnet --seeds 0 1 2
    python benchmarks/quantize.py --section diagnose --diagnose-steps 50
    python benchmarks/quantize.py --section digits-long --long-epochs 36 --long-variants xnor
    python benchmarks/quantize.py --section digits-adapt --adapt-epochs 6 --seeds 0
    python benchmarks/quantize.py --section cifar10 --cifar-train 8000 --fp-epochs 20 --seeds 0 1 2 --jobs 2
    python benchmarks/quantize.py --section digits-width --digits-width 1.0 --fp-epochs 60 --fp-lr 0.02 --seeds 0
    python benchmarks/quantize.py --section diagnose-kinds --diagnose-steps 50
    python benchmarks/quantize.py --section size
    flock /tmp/mltk-bench.lock python benchmarks/quantize.py --section latency
    python benchmarks/quantize.py --report          # rewrite the markdown from the JSON only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
JSON_PATH = RESULTS / "quantize.json"
MD_PATH = RESULTS / "quantize.md"
# MLTK_BENCH_CIFAR_ZIP: another copy of the zip, or a class-balanced part of it in the same layout
CIFAR_ZIP = Path(os.environ.get("MLTK_BENCH_CIFAR_ZIP")
                 or Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "cifar10_train_jpg.zip")

# (label, extra arguments of `mltk quantize`); every W1/A1 run uses the same preset (budget)
BINARY_VARIANTS = [
    ("xnor", ["--method", "xnor"]),
    ("reactnet", ["--method", "reactnet"]),
    ("bitat, identity transform", ["--method", "bitat", "bitat.transform=identity"]),
    ("bitat, pca transform", ["--method", "bitat", "bitat.transform=pca"]),
    ("bitat, learned transform (cayley)", ["--method", "bitat", "bitat.transform=learned"]),
]
# the same methods with every layer but the stem and the classifier binarized (no narrow-layer rule)
FULLY_BINARIZED_VARIANTS = [
    ("xnor, fully binarized", ["--method", "xnor", "quant.min_binary_channels=0"]),
    ("bitat, identity transform, fully binarized", ["--method", "bitat", "bitat.transform=identity",
                                                    "quant.min_binary_channels=0"]),
]
# BiTAT with XNOR-Net's activations (sign, clipped straight-through estimator), what the digits preset chose
ACTIVATION_VARIANTS = [
    ("bitat, pca transform, xnor activations", ["--method", "bitat", "bitat.transform=pca",
                                                "bitat.activations=xnor"]),
    ("bitat, identity transform, xnor activations", ["--method", "bitat", "bitat.transform=identity",
                                                     "bitat.activations=xnor"]),
]
NO_TRAINING_VARIANTS = [
    ("xnor, no training (calibration only)", ["--method", "xnor", "train.epochs=0"]),
    ("bitat pca, no training (calibration only)", ["--method", "bitat", "bitat.transform=pca", "train.epochs=0"]),
]
UNIFORM_VARIANTS = [
    ("uniform 8-bit weights, post-training", ["--bits", "8"]),
    ("uniform 4-bit weights, QAT", ["--bits", "4"]),
    ("uniform 2-bit weights, QAT", ["--bits", "2"]),
]


# ---------------------------------------------------------------- running mltk


def mltk(work: Path, *args: str, timeout: float = 6 * 3600) -> dict:
    """Run ``mltk ARGS --format json`` in a child process; its JSON result plus the command and wall time."""
    env = dict(os.environ, MLTK_HOME=str(work / "home"), MLTK_RUNS=str(work / "runs"), CI="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, "-m", "mltk", *args, "--format", "json"]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=work)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(['mltk', *args])}\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout)
    out["command"] = shlex.join(["mltk", *args])
    out["seconds"] = round(seconds, 1)
    return out


def artifact_exists(work: Path, name: str) -> bool:
    env = dict(os.environ, MLTK_HOME=str(work / "home"))
    proc = subprocess.run([sys.executable, "-m", "mltk", "ls", name, "--format", "quiet"], capture_output=True,
                          text=True, env=env, cwd=work)
    return proc.returncode == 0 and bool(proc.stdout.strip())


def train_float(work: Path, name: str, args: list[str]) -> dict:
    """Train (or reuse) the float parent ``name``; its metrics and command."""
    cached = work / f"{name}.json"
    if cached.exists() and artifact_exists(work, name):
        return json.loads(cached.read_text())
    result = mltk(work, "train", "supervised", *args, f"name={name}")
    record = {"artifact": result["artifact"], "metrics": result["metrics"], "command": result["command"],
              "seconds": result["seconds"]}
    cached.write_text(json.dumps(record))
    return record


def quantize_runs(work: Path, parent: str, preset: str, variants, seeds, tag: str, rows: list[dict],
                  save, jobs: int = 1) -> list[dict]:
    """Every variant for one seed, then the next seed; ``rows`` grows and ``save()`` runs after each run.

    ``jobs`` runs that many ``mltk quantize`` processes at once (one thread each); rows keep the serial order.
    """
    runs = [(seed, label, extra) for seed in seeds for label, extra in variants]

    def run(seed: int, label: str, extra: list[str]) -> dict:
        slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:60]
        result = mltk(work, "quantize", parent, "--preset", preset, *extra, f"seed={seed}", f"name={tag}-{slug}-s{seed}")
        metrics = result["metrics"]
        print(f"{label} seed {seed}: test {metrics['test_accuracy']:.4f} gap {metrics['accuracy_gap']:.4f} "
              f"({result['seconds']:.0f} s)", flush=True)
        return {"variant": label, "seed": seed, "command": result["command"], "seconds": result["seconds"],
                "artifact": result["artifact"], "metrics": metrics,
                "train_accuracy_by_epoch": _train_accuracies(result.get("run_dir"))}

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for row in pool.map(lambda args: run(*args), runs):
            rows.append(row)
            save()
    return rows


def _train_accuracies(run_dir: str | None) -> list[float]:
    """The training accuracy of every epoch of a run (its metrics.jsonl)."""
    path = Path(run_dir) / "metrics.jsonl" if run_dir else None
    if path is None or not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [round(r["train_accuracy"], 4) for r in records if "train_accuracy" in r]


# ---------------------------------------------------------------- sections


def digits_parent_args(width: float = 0.5, epochs: int = 40, lr: float = 0.05) -> list[str]:
    """``mltk train supervised`` arguments of a float MobileNetV2 parent on digits (mbv2-digits: the defaults)."""
    return ["--preset", "cifar10-mobilenetv2", "data=digits", f"model.options.width_mult={width}",
            f"train.epochs={epochs}", "train.batch_size=64", f"optim.lr={lr}", "train.augment=crop"]


def section_digits(work: Path, seeds: list[int], fp_epochs: int, save, with_uniform: bool = True) -> dict:
    """MobileNetV2 on digits: every W1/A1 variant (float shortcuts on, the default), then the rest.

    ``with_uniform=False`` leaves out the 2/4/8-bit runs: they have float inputs, hence no float shortcuts,
    and do not change with them (their earlier rows stay in ``digits-plain``).
    """
    section = {"float": train_float(work, "mbv2-digits", digits_parent_args(epochs=fp_epochs)), "runs": [],
               "float_shortcuts": True}
    parent, rows = section["float"]["artifact"], section["runs"]
    quantize_runs(work, parent, "digits", BINARY_VARIANTS, seeds[:1], "digits", rows, lambda: save(section))
    quantize_runs(work, parent, "digits", NO_TRAINING_VARIANTS + (UNIFORM_VARIANTS if with_uniform else []),
                  seeds[:1], "digits", rows, lambda: save(section))
    quantize_runs(work, parent, "digits", BINARY_VARIANTS, seeds[1:], "digits", rows, lambda: save(section))
    return section


def section_convnet(work: Path, seeds: list[int], save) -> dict:
    """The same W1/A1 comparison on a net W1/A1 QAT can train at this budget: ConvNet-3 (width 64, BatchNorm)."""
    fp_args = ["--preset", "digits", "model.options.norm=batchnorm", "model.options.width=64"]
    section = {"float": train_float(work, "convnet-digits", fp_args), "runs": []}
    parent, rows = section["float"]["artifact"], section["runs"]
    quantize_runs(work, parent, "digits", BINARY_VARIANTS, seeds, "convnet", rows, lambda: save(section))
    quantize_runs(work, parent, "digits", NO_TRAINING_VARIANTS + UNIFORM_VARIANTS[:1], seeds[:1], "convnet", rows,
                  lambda: save(section))
    return section


def section_digits_long(work: Path, epochs: int, methods: list[str], save) -> dict:
    """MobileNetV2 on digits with a longer QAT budget (every variant the same ``epochs``): does W1/A1 leave chance?"""
    section = {"float": train_float(work, "mbv2-digits", digits_parent_args()), "runs": [], "epochs": epochs}
    variants = [(label, [*extra, f"train.epochs={epochs}"]) for label, extra in BINARY_VARIANTS
                if label in methods]
    quantize_runs(work, section["float"]["artifact"], "digits", variants, [0], f"long{epochs}", section["runs"],
                  lambda: save(section))
    return section


def section_digits_width(work: Path, width: float, methods: list[str], seeds: list[int], save, jobs: int,
                         fp_epochs: int, fp_lr: float) -> dict:
    """MobileNetV2 W1/A1 on digits at another width (the default section is 0.5): do wider bottlenecks train?"""
    parent = train_float(work, f"mbv2-digits-w{width}", digits_parent_args(width, fp_epochs, fp_lr))
    section = {"float": parent, "runs": [], "width_mult": width}
    variants = [(label, extra) for label, extra in BINARY_VARIANTS if label in methods]
    quantize_runs(work, section["float"]["artifact"], "digits", variants, seeds, f"width{width}", section["runs"],
                  lambda: save(section), jobs)
    return section


def section_digits_adapt(work: Path, adapt_epochs: int, methods: list[str], seeds: list[int], save) -> dict:
    """MobileNetV2 W1/A1 on digits after a float adaptation phase (``train.adapt_epochs``, the same for all).

    Runs add to those already in quantize.json (other variants, seeds or adaptation lengths).
    """
    section = {"float": train_float(work, "mbv2-digits", digits_parent_args()), "runs": []}
    parent_runs = [p.parent for p in sorted((work / "runs" / "supervised").glob("*/config.yaml"))
                   if re.search(r"^name: mbv2-digits$", p.read_text(), re.M)]
    if parent_runs:  # the float parent's own training accuracy, for comparison with the float adaptation
        section["float"]["train_accuracy_by_epoch"] = _train_accuracies(str(parent_runs[-1]))
    on_disk = json.loads(JSON_PATH.read_text()).get("digits-adapt", {}) if JSON_PATH.exists() else {}
    for row in on_disk.get("runs", []):
        if "adapt_epochs" not in row:  # the first runs recorded it once for the section
            row.update(adapt_epochs=on_disk["adapt_epochs"], method=row["variant"],
                       variant=f"{row['variant']}, after {on_disk['adapt_epochs']} float epochs")
        section["runs"].append(row)
    done = {(row["method"], row["adapt_epochs"], row["seed"]) for row in section["runs"]}
    for seed in seeds:
        variants = [(f"{label}, after {adapt_epochs} float epochs", [*extra, f"train.adapt_epochs={adapt_epochs}"])
                    for label, extra in BINARY_VARIANTS if label in methods and (label, adapt_epochs, seed) not in done]
        start = len(section["runs"])
        quantize_runs(work, section["float"]["artifact"], "digits", variants, [seed], f"adapt{adapt_epochs}",
                      section["runs"], lambda: save(section))
        for row in section["runs"][start:]:
            row.update(adapt_epochs=adapt_epochs, method=row["variant"].rsplit(", after ", 1)[0])
        save(section)
    return section


def section_diagnose(work: Path, steps: int, float_shortcuts: bool = False, conditions: str = "blocks",
                     parent: str = "mbv2-digits:1") -> dict:
    """``quantize_diagnose.py`` on a digits MobileNetV2 parent: which quantizers stop training."""
    script = Path(__file__).with_name("quantize_diagnose.py")
    env = dict(os.environ, MLTK_HOME=str(work / "home"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    flag = (["--float-shortcuts"] if float_shortcuts else []) + ["--conditions", conditions]
    command = [sys.executable, str(script), "--parent", parent, "--steps", str(steps), *flag]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=work)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    out = json.loads(proc.stdout)
    out["command"] = f"MLTK_HOME=... python benchmarks/quantize_diagnose.py --parent {parent} --steps {steps}"
    out["command"] += " --float-shortcuts" * float_shortcuts + f" --conditions {conditions}" * (conditions != "blocks")
    return out


def section_diagnose_kinds(work: Path, steps: int) -> dict:
    """The kinds diagnosis (float shortcuts on) on the width-0.5 parent and, once trained, the width-1.0 one."""
    parents = ["mbv2-digits:1"] + ["mbv2-digits-w1.0"] * artifact_exists(work, "mbv2-digits-w1.0")
    return {"runs": [section_diagnose(work, steps, float_shortcuts=True, conditions="kinds", parent=parent)
                     for parent in parents]}


def section_fp16(work: Path, results: dict) -> dict:
    """``quantize_fp16_check.py`` over the artifacts of the digits and convnet sections: float16 vectors."""
    refs = [row["artifact"] for key in ("digits", "convnet", "digits-plain") for row in results.get(key, {}).get("runs", [])
            if key != "digits-plain" or "uniform" in row["variant"]]
    script = Path(__file__).with_name("quantize_fp16_check.py")
    env = dict(os.environ, MLTK_HOME=str(work / "home"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), *refs], capture_output=True, text=True, env=env, cwd=work)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    out = json.loads(proc.stdout)
    out["command"] = "MLTK_HOME=... python benchmarks/quantize_fp16_check.py REF [REF ...]"
    return out


def cifar_npz(work: Path, train_images: int) -> Path:
    """CIFAR-10 train JPEGs: 5,000 held out as test (mltk's seeded hold-out), a seeded subset of the rest."""
    path = work / f"cifar10-{train_images}.npz"
    if path.exists():
        return path
    import numpy as np
    import torch

    from mltk.data import DataSpec, load_splits

    splits = load_splits(DataSpec(name=f"imagefolder:{CIFAR_ZIP}", test_holdout=5000))
    order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))[:train_images]
    np.savez(path, x_train=splits.train.images[order].numpy(), y_train=splits.train.labels[order].numpy(),
             x_test=splits.test.images.numpy(), y_test=splits.test.labels.numpy(),
             class_names=np.array(splits.train.class_names, dtype=str))
    return path


def cifar10_parent_args(data: Path, width: float, fp_epochs: int) -> list[str]:
    return ["--preset", "cifar10-mobilenetv2", f"data=npz:{data}", f"model.options.width_mult={width}",
            f"train.epochs={fp_epochs}", "train.batch_size=64", "optim.lr=0.05"]


def section_cifar10_parent(work: Path, train_images: int = 8000, width: float = 0.5, fp_epochs: int = 20) -> dict:
    """The float parent of the cifar10 section (trained once, then reused from ``work``)."""
    data = cifar_npz(work, train_images)
    return train_float(work, f"mbv2-cifar10-{train_images}", cifar10_parent_args(data, width, fp_epochs))


def section_cifar10(work: Path, seeds: list[int], train_images: int, width: float, fp_epochs: int, save,
                    jobs: int = 1, qat_epochs: int | None = None, variants: list[str] | None = None) -> dict:
    """``qat_epochs`` overrides the preset's epochs for every method alike; ``variants`` picks labels of
    BINARY_VARIANTS and FULLY_BINARIZED_VARIANTS (every BINARY_VARIANT by default)."""
    import torch

    section = {"float": section_cifar10_parent(work, train_images, width, fp_epochs), "runs": [],
               "train_images": train_images, "test_images": 5000, "width_mult": width, "qat_epochs": qat_epochs,
               "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
               "zip_images": _zip_images()}
    chosen = [(label, extra + ([f"train.epochs={qat_epochs}"] if qat_epochs else []))
              for label, extra in BINARY_VARIANTS + FULLY_BINARIZED_VARIANTS + ACTIVATION_VARIANTS
              if (label in variants if variants else (label, extra) in BINARY_VARIANTS)]
    def with_other_seeds() -> dict:
        """The section plus the runs of other seeds of the same parent on disk (earlier or running processes)."""
        on_disk = json.loads(JSON_PATH.read_text()).get("cifar10", {}) if JSON_PATH.exists() else {}
        if on_disk.get("float") == section["float"]:  # the same parent (a name alone recurs across registries)
            mine = {(row["variant"], row["seed"]) for row in section["runs"]}
            section["runs"] += [row for row in on_disk.get("runs", []) if row["seed"] not in seeds
                                and (row["variant"], row["seed"]) not in mine]
            section["runs"].sort(key=lambda row: row["seed"])
        return section

    quantize_runs(work, section["float"]["artifact"], "cifar10-cpu", chosen, seeds, "cifar10",
                  section["runs"], lambda: save(with_other_seeds()), jobs)
    return with_other_seeds()


def _zip_images() -> int:
    import zipfile

    with zipfile.ZipFile(CIFAR_ZIP) as archive:
        return sum(name.endswith(".jpg") for name in archive.namelist())


def section_size(work: Path, vector_dtypes: tuple[str, ...] = ("float32",)) -> dict:
    import numpy as np

    data = work / "random-32px.npz"
    if not data.exists():
        rng = np.random.default_rng(0)
        np.savez(data, x_train=rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8),
                 y_train=np.arange(256) % 10, x_test=rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
                 y_test=np.arange(64) % 10)
    rows = []
    for width in (1.0, 0.5):
        fp = train_float(work, f"mbv2-size-w{width}", [
            "--preset", "cifar10-mobilenetv2", f"data=npz:{data}", f"model.options.width_mult={width}",
            "train.max_steps=1", "train.batch_size=64"])
        variants = [("1-bit (W1/A1, xnor)", ["--method", "xnor"], "1-bit"),
                    ("1-bit (W1/A1, bitat: + RSign thresholds, RPReLU)", ["--method", "bitat"], "1-bit-bitat"),
                    ("2-bit", ["--bits", "2"], "2-bit"), ("4-bit", ["--bits", "4"], "4-bit"),
                    ("8-bit", ["--bits", "8"], "8-bit")]
        for dtype in vector_dtypes:
            if dtype != "float32":  # the 1-bit artifacts again, their per-channel vectors stored in ``dtype``
                variants += [(f"{label}, {dtype} vectors", [*extra, f"quant.vector_dtype={dtype}"], f"{tag}-{dtype}")
                             for label, extra, tag in variants[:2]]
        for label, extra, tag in variants:
            result = mltk(work, "quantize", fp["artifact"], *extra, "train.max_steps=1", "calibration.images=64",
                          f"name=size-w{width}-{tag}")
            metrics = result["metrics"]
            rows.append({"width_mult": width, "variant": label, "command": result["command"],
                         "fp_bytes": metrics["fp_size_bytes"], "bytes": metrics["size_bytes"],
                         "ratio": metrics["size_ratio"], "artifact": result["artifact"]})
            print(f"w{width} {label}: {metrics['size_bytes']} bytes, ratio {metrics['size_ratio']:.2f}", flush=True)
    return {"rows": rows, "fp_command": "see rows; float parents: mltk train supervised --preset cifar10-mobilenetv2 "
                                        "data=npz:random-32px.npz model.options.width_mult=W train.max_steps=1"}


def section_latency(work: Path, repeats: int) -> dict:
    if not (work / "mbv2-size-w1.0.json").exists():
        section_size(work)
    script = Path(__file__).with_name("quantize_latency.py")
    env = dict(os.environ, MLTK_HOME=str(work / "home"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), "--float", "mbv2-size-w1.0",
                           "--binary", "size-w1.0-1-bit", "--repeats", str(repeats)],
                          capture_output=True, text=True, env=env, cwd=work)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout)


# ---------------------------------------------------------------- report


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def _run_table(section: dict) -> list[str]:
    fp = section["float"]["metrics"]["test_accuracy"]
    lines = ["| variant | seeds | test accuracy (%) | gap to float (points) | time per run (s) |",
             "|---|---|---|---|---|"]
    variants: dict[str, list[dict]] = {}
    for row in section["runs"]:
        variants.setdefault(row["variant"], []).append(row)
    lines.append(f"| float parent | 1 | {100 * fp:.1f} | 0 | {section['float']['seconds']:.0f} |")
    for label, rows in variants.items():
        accs = [r["metrics"]["test_accuracy"] for r in rows]
        gaps = [r["metrics"]["accuracy_gap"] for r in rows]
        seconds = statistics.mean(r["seconds"] for r in rows)
        lines.append(f"| {label} | {len(rows)} | {_mean_std(accs)} | {_mean_std(gaps)} | {seconds:.0f} |")
    return lines


def _bitat_claim(gaps: dict[str, list[float]]) -> str:
    """Whether BiTAT's gap to float is smaller than every baseline's at the same plan and budget, for each of
    BiTAT's activation settings measured."""
    default = {v: statistics.mean(g) for v, g in gaps.items() if "fully binarized" not in v}
    baselines = {v: g for v, g in default.items() if not v.startswith("bitat")}
    if not baselines:
        return ""
    best_baseline = min(baselines, key=baselines.get)
    out = []
    for label, chosen in (("with ReActNet's activations", lambda v: "activations" not in v),
                          ("with XNOR-Net's activations (`bitat.activations=xnor`, both presets' choice, made on "
                           "a validation split: quantize_plan.md)", lambda v: "xnor activations" in v)):
        bitat = {v: g for v, g in default.items() if v.startswith("bitat") and chosen(v)}
        if bitat:
            best = min(bitat, key=bitat.get)
            held = bitat[best] < baselines[best_baseline]
            out.append(f"{label} it {'holds' if held else 'does not hold'} ({best} {100 * bitat[best]:.1f} "
                       f"against {best_baseline} {100 * baselines[best_baseline]:.1f} points)")
    return ("BiTAT's claim (a smaller gap than the baselines at equal epochs), default plan: " + "; ".join(out) + "."
            if out else "")


def _last_epoch_range(section: dict) -> str:
    """A sentence with the range of the last epoch's training accuracy over the trained runs, if recorded."""
    last = [row["train_accuracy_by_epoch"][-1] for row in section["runs"] if row.get("train_accuracy_by_epoch")]
    if not last:
        return ""
    return (f" Training accuracy of the last epoch: {100 * min(last):.0f} to {100 * max(last):.0f}% over the "
            f"{len(last)} trained runs (their metrics.jsonl).")


def _binary_means(section: dict) -> dict[str, list[float]]:
    """Test accuracies of the trained W1/A1 variants of a section, by variant."""
    accs: dict[str, list[float]] = {}
    for row in section["runs"]:
        if "no training" not in row["variant"] and "uniform" not in row["variant"]:
            accs.setdefault(row["variant"], []).append(row["metrics"]["test_accuracy"])
    return accs


def _commands(section: dict) -> list[str]:
    seen, lines = set(), ["```", section["float"]["command"]]
    for row in section["runs"]:
        command = row["command"].rsplit(" seed=", 1)[0]
        if command not in seen:
            seen.add(command)
            lines.append(command + " seed=S name=...")
    return lines + ["```"]


def _adapt_note(section: dict, results: dict) -> str:
    """What the float adaptation runs are, their training accuracies, and the same variants without it."""
    lines = ["The same parent and `--preset digits` (12 QAT epochs) as above, preceded by `train.adapt_epochs=N`: "
             "N epochs of the training-form network with every float shortcut on and every quantizer off (float "
             "weights and activations, the parent's ReLU6s), the same loss (half distilled from the parent), Adam "
             "and cosine learning rate; then the method's own schedule. The same N for every method compared; "
             "accuracy measured on the deployed artifact."]
    parent = section["float"].get("train_accuracy_by_epoch")
    if parent:
        lines.append(f"Training accuracy (crop augmentation) of the float parent's last epoch: {100 * parent[-1]:.1f}%.")
    for row in section["runs"]:
        by_epoch, adapt = row.get("train_accuracy_by_epoch") or [], row.get("adapt_epochs") or 0
        if len(by_epoch) > adapt > 0:
            lines.append(f"{row['variant']} (seed {row['seed']}): training accuracy {100 * by_epoch[0]:.1f}% in the "
                         f"first float epoch, {100 * by_epoch[adapt - 1]:.1f}% in the last, "
                         f"{100 * by_epoch[adapt]:.1f}% in the first QAT epoch, {100 * by_epoch[-1]:.1f}% in the "
                         "last.")
    seeds = {r["seed"] for r in section["runs"]}
    without: dict[str, list[float]] = {}
    for row in results.get("digits", {}).get("runs", []):
        if row["seed"] in seeds:
            without.setdefault(row["variant"], []).append(row["metrics"]["test_accuracy"])
    methods = dict.fromkeys(r.get("method", r["variant"]) for r in section["runs"])
    pairs = [f"{label} {_mean_std(without[label])}%" for label in methods if label in without]
    if pairs:
        lines.append(f"Without the adaptation (the first table, seed{'s' * (len(seeds) != 1)} "
                     f"{', '.join(map(str, sorted(seeds)))}): " + "; ".join(pairs) + ".")
    long = results.get("digits-long", {})
    long_rows = [r for r in long.get("runs", []) if r["seed"] in seeds]
    if long_rows:  # the same total epochs, all of them QAT
        lines.append(f"With {long.get('epochs')} QAT epochs and no adaptation (the longer-budget table): "
                     + "; ".join(f"{r['variant']} {100 * r['metrics']['test_accuracy']:.1f}%" for r in long_rows)
                     + ".")
    adapted = [r["metrics"]["test_accuracy"] for r in section["runs"]]
    baseline = [a for label in methods for a in without.get(label, [])]
    floats = [r["train_accuracy_by_epoch"][r["adapt_epochs"] - 1] for r in section["runs"]
              if len(r.get("train_accuracy_by_epoch") or []) > r.get("adapt_epochs", 0) > 0]
    first_qat = [r["train_accuracy_by_epoch"][r["adapt_epochs"]] for r in section["runs"]
                 if len(r.get("train_accuracy_by_epoch") or []) > r.get("adapt_epochs", 0) > 0]
    if baseline and floats and max(adapted) < max(baseline) + 0.05:
        lines.append(
            f"A negative result: no adapted run scores more than 5 points above the best run without adaptation "
            f"({100 * max(adapted):.1f}% against {100 * max(baseline):.1f}%). The float network does adapt to its "
            f"shortcuts (up to {100 * max(floats):.0f}% training accuracy by the end of the adaptation, from about "
            "a quarter in its first epoch: switching the shortcuts on does take the parent far from what it "
            "learned), but as soon as the method binarizes, the training accuracy falls to "
            f"{100 * min(first_qat):.0f} to {100 * max(first_qat):.0f}% in the first QAT epoch (for bitat, an "
            "epoch that binarizes only its lowest stages) and stays there, "
            f"after {' as after '.join(map(str, sorted({r['adapt_epochs'] for r in section['runs']})))} float "
            "epochs alike. So the distance between the float parent and the network with "
            "shortcuts is not what keeps W1/A1 MobileNetV2 at chance here; the binary inputs of its narrow "
            "layers are (the diagnosis above: binary inputs alone, float weights, already stop training). The "
            "digits preset keeps `train.adapt_epochs=0`.")
    return " ".join(lines)


def _kinds_report(section: dict) -> list[str]:
    """The diagnosis by kind of layer (depthwise, expanding, projecting), one column pair per parent."""
    runs = section["runs"]
    out = ["## Diagnosis by kind of layer, float shortcuts on", "",
           "`quantize_diagnose.py --float-shortcuts --conditions kinds`: the same fine-tuning as above (Adam, "
           f"{runs[0]['rows'][0]['steps']} steps, one seed), quantizers switched on by kind of layer: the depthwise "
           "3x3s (input: the expanded, ReLU6 features), the expanding 1x1s (input: the linear bottleneck, no ReLU) "
           "and the projecting 1x1s (input: the depthwise output after ReLU6). Train accuracy of the last 25 "
           "steps / test accuracy, in %, per float parent.", "",
           "| quantized | " + " | ".join(f"{run['parent']} (float {100 * run['float_test_accuracy']:.1f})"
                                        for run in runs) + " |",
           "|---|" + "---|" * len(runs)]
    for index, row in enumerate(runs[0]["rows"]):
        cells = [f"{100 * run['rows'][index]['train_accuracy_last_25_steps']:.1f} / "
                 f"{100 * run['rows'][index]['test_accuracy']:.1f}" for run in runs]
        out.append(f"| {row['condition']} | " + " | ".join(cells) + " |")
    def test(run: dict, prefix: str) -> float:
        return 100 * next(r["test_accuracy"] for r in run["rows"] if r["condition"].startswith(prefix))

    one = ("depthwise 3x3s only", "expanding 1x1s only", "projecting 1x1s only")
    costs = "; ".join(f"{run['parent']}: " + ", ".join(
        f"{kind.split()[0]} {100 * run['float_test_accuracy'] - test(run, 'W32/A1: binary inputs of the ' + kind):.0f}"
        for kind in one) for run in runs)
    two = max(test(run, prefix) for run in runs for prefix in ("W32/A1: binary inputs of every 1x1",
                                                               "W32/A1: binary inputs of the depthwise 3x3s and"))
    partial = max(100 * r["test_accuracy"] for run in runs for r in run["rows"] if r["condition"].startswith("W1/A1 but"))
    every = max(test(run, "W1/A1: all") for run in runs)
    out += ["", f"Points lost against the float parent with the inputs of one kind binary: {costs}. With the inputs "
            f"of two kinds binary the test accuracy is at most {two:.0f}%, and W1/A1 with either the depthwise or "
            f"the expanding layers' inputs kept float at most {partial:.0f}%. The expanding 1x1s, whose input is "
            "the sign of the linear bottleneck, lose the most at both widths; the wider network loses less with "
            f"the inputs of one or two kinds binary, but with all of them binary (W1/A1) both score at most "
            f"{every:.0f}%. No single kind of layer is the culprit, so keeping "
            "one kind's inputs float (cheap in size: the weights stay binary) would not rescue W1/A1 "
            "MobileNetV2 here."]
    return out + ["", "```", *(run["command"] for run in runs), "```", ""]


def _sibling(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _plan_item(plan: dict, width: str) -> str:
    """Digits at one width from quantize_plan.json: each method's mean test accuracy for both plans, goals."""
    rows = plan.get(f"digits-w{width}", {}).get("rows", [])
    if not rows:
        return ""
    parts = []
    for name, goal in (("default plan", 0.85), ("fully binarized", 0.50)):
        accs: dict[str, list[float]] = {}
        for row in rows:
            if row["plan"] == name:
                accs.setdefault(row["method"], []).append(row["metrics"]["test_accuracy"])
        if not accs:
            continue
        ranked = sorted(accs, key=lambda m: -statistics.mean(accs[m]))
        seeds = max(len(a) for a in accs.values())
        best = statistics.mean(accs[ranked[0]])
        parts.append(f"{name} ({seeds} seed{'s' * (seeds != 1)}): " + ", ".join(f"{m} {_mean_std(accs[m])}%"
                                                                             for m in ranked)
                     + f" (goal for the best at least {100 * goal:.0f}%: {'met' if best >= goal else 'not met'})")
    float_acc = rows[0]["metrics"]["fp_test_accuracy"]
    return f"width {width} (float {100 * float_acc:.1f}%): " + "; ".join(parts)


def _current_items(results: dict) -> list[str]:
    """Where each item of the issue stands, from this file's CIFAR-10 runs and the other quantize benchmarks."""
    plan, tflite = _sibling("quantize_plan"), _sibling("tflite_import")
    pretrained, speed = _sibling("quantize_pretrained"), _sibling("quantize_speed")
    out = ["## Where each item stands (current figures)", "",
           "Today's defaults, gathered from the benchmarks that measure them; the sections after this one keep "
           "the earlier runs.", ""]
    digits = [item for item in (_plan_item(plan, "0.5"), _plan_item(plan, "1.0")) if item]
    if digits:
        out.append("1. W1/A1 MobileNetV2 on digits at the digits preset's budget, test accuracy as deployed "
                   "(quantize_plan.md): " + ". ".join(digits) + ".")
    if results.get("cifar10", {}).get("runs"):
        gaps: dict[str, list[float]] = {}
        for row in results["cifar10"]["runs"]:
            gaps.setdefault(row["variant"], []).append(row["metrics"]["accuracy_gap"])
        out.append("   CIFAR-10 (below), gap to the float parent in points, smallest first: "
                   + "; ".join(f"{v} {_mean_std(gaps[v])}" for v in sorted(gaps, key=lambda v: statistics.mean(gaps[v])))
                   + ". " + _bitat_claim(gaps))
    if tflite.get("sets"):
        every = tflite["sets"]["all"]
        artifact, simulated = every["artifact"], every["simulated_uint8"]
        line = (f"2. The pretrained ImageNet MobileNetV2 (tflite_import.md): top-1 agreement with the TFLite "
                f"interpreter on {artifact['images']} images {100 * artifact['top1_agreement']:.1f}% (goal at least "
                f"95%: {'met' if artifact['top1_agreement'] >= 0.95 else 'not met'}; "
                f"{100 * artifact['top1_in_interpreter_ties']:.1f}% counting the interpreter's tied uint8 "
                f"maxima; {100 * simulated['top1_agreement']:.1f}% with every activation rounded to the file's "
                "uint8 grid, a diagnostic: the rest is the interpreter's integer rounding).")
        if pretrained.get("quantized"):
            quantized = pretrained["quantized"]
            line += (f" End to end on CIFAR-10 (quantize_pretrained.md, one seed): fine-tuned float "
                     f"{100 * pretrained['fine_tuned']['metrics']['test_accuracy']:.1f}%, "
                     + ", ".join(f"`mltk quantize --bits 1 mobilenet.pt` {m} "
                                 f"{100 * r['metrics']['test_accuracy']:.1f}% at 1/{r['metrics']['size_ratio']:.1f} "
                                 "of the size" for m, r in quantized.items()) + ".")
        out.append(line)
    runs = speed.get("runs", {})
    if runs:
        def ratios(run: str, form: str, key: str, batch: str | None = None) -> str:
            values = [row[key][batch][form] if batch else row[key][form] for row in runs.get(run, {}).get("rows", [])
                      if (batch is None or batch in row[key])]
            return f"{min(values):.2f}-{max(values):.2f}x" if values else "-"
        small, large = "after, int8 products", "imagenet scale, batch 16"
        out.append(
            "3. Speed, one CPU thread (quantize_speed.md; goals: a QAT step at most 1.5x the float step, "
            "deployed latency at most 1.0x the float network). QAT step at 8x8x1 and 32x32x3, batch 64: "
            f"xnor {ratios(small, 'xnor', 'step_ratio')}, bitat with XNOR activations "
            f"{ratios(small, 'bitat, pca, xnor activations', 'step_ratio')}; at 224x224x3, batch 16: xnor "
            f"{ratios(large, 'xnor', 'step_ratio')}, bitat with XNOR activations "
            f"{ratios(large, 'bitat, pca, xnor activations', 'step_ratio')}. Deployed latency, xnor: batch 64 "
            f"{ratios(small, 'xnor', 'latency_ratio', '64')}, batch 1 {ratios(small, 'xnor', 'latency_ratio', '1')}; "
            f"at 224 px batch 16 {ratios(large, 'xnor', 'latency_ratio', '16')}, batch 1 "
            f"{ratios(large, 'xnor', 'latency_ratio', '1')}.")
    sizes = [(row["method"], row["plan"], row["metrics"]["size_ratio"], width)
             for width in ("0.5", "1.0") for row in plan.get(f"digits-w{width}", {}).get("rows", []) if row["seed"] == 0]
    full = [f"{m} at width {w} 1/{r:.2f}" for m, p, r, w in sizes if p == "fully binarized"]
    if full:
        out.append("4. Size of the fully binarized network (goal at most 1/12 of the float artifact): "
                   + ", ".join(full) + "; every plan's ratio is in quantize_plan.md.")
    return out + [""]


def write_report(results: dict) -> None:
    out = ["# Quantization benchmark (`benchmarks/quantize.py`)", "",
           f"Machine: {results.get('machine', '-')}. Every command ran as a child process with one thread "
           "(`OMP_NUM_THREADS=1`) on a CPU shared with other jobs, so times are indicative only.",
           "First and last layers (the stem conv and the classifier) stay full precision in every quantized "
           "network; squeeze-excitation gates too (MobileNetV3 only).", "",
           "**Which figures are current.** The CIFAR-10 section runs today's defaults: the default plan (blocks "
           "that narrow below 32 channels stay float, `quant.min_binary_channels=32`) with MobileNetV2's branch "
           "gain (0.01, `quant.branch_gain`; quantize_branch_gain.md) and, beside it, the fully binarized "
           "network (`quant.min_binary_channels=0`: every layer but the stem and the classifier). The same "
           "parent and seeds before the gain: xnor 46.7 ± 0.3%, reactnet 41.8 ± 0.4, bitat (pca, xnor "
           "activations) 47.5 ± 0.1, bitat (identity, xnor activations) 48.5 ± 0.5, xnor fully binarized "
           "31.1 ± 1.1 (bitat with ReActNet's activations, the preset's choice then: 42.7-43.2). The digits, "
           "ConvNet and diagnosis sections predate the default plan: every MobileNetV2 layer but the stem and "
           "the classifier was binarized there. They are kept as the record of why W1/A1 MobileNetV2 sat at "
           "chance; the digits figures with today's plan, every method, both plans, 3 seeds, are in "
           "`quantize_plan.md` (`benchmarks/quantize_plan.py`). Speed: `quantize_speed.md`; a pretrained "
           "ImageNet MobileNetV2 end to end: `quantize_pretrained.md`.", ""]
    summary = ["## The issue's items, as first measured", ""]
    item1 = "1. W1/A1 against float."
    if results.get("cifar10", {}).get("runs"):
        section = results["cifar10"]
        gaps: dict[str, list[float]] = {}
        for row in section["runs"]:
            gaps.setdefault(row["variant"], []).append(row["metrics"]["accuracy_gap"])
        seeds = max(len(v) for v in gaps.values())
        item1 += (f" CIFAR-10 (MobileNetV2 width {section['width_mult']}, {section['train_images']:,} training "
                  f"images, {seeds} seed{'s' * (seeds != 1)}, below), gap to the float parent "
                  f"({100 * section['float']['metrics']['test_accuracy']:.1f}%), smallest first: "
                  + "; ".join(f"{v} {_mean_std(gaps[v])}" for v in sorted(gaps, key=lambda v: statistics.mean(gaps[v])))
                  + " points. " + _bitat_claim(gaps) + " Earlier runs, every layer binarized:")
    if results.get("digits", {}).get("runs"):
        accs = _binary_means(results["digits"])
        seeds = max(len(v) for v in accs.values())
        item1 += (" MobileNetV2 (width 0.5) on digits with float shortcuts around the binary convs (the default, "
                  f"below), test accuracy as deployed, {seeds} seed{'s' * (seeds != 1)}: "
                  + "; ".join(f"{v} {100 * statistics.mean(a):.1f}%" for v, a in accs.items())
                  + f" (float {100 * results['digits']['float']['metrics']['test_accuracy']:.1f}%).")
    if results.get("digits-plain", {}).get("runs"):
        accs = _binary_means(results["digits-plain"])
        item1 += (" Without the shortcuts (earlier runs): "
                  + "; ".join(f"{v} {100 * statistics.mean(a):.1f}%" for v, a in accs.items()) + ".")
    if results.get("digits-adapt", {}).get("runs"):
        accs = _binary_means(results["digits-adapt"])
        seeds = max(len(v) for v in accs.values())
        item1 += (" After a float adaptation phase with the shortcuts on (`train.adapt_epochs`, below), "
                  f"{seeds} seed{'s' * (seeds != 1)}: "
                  + "; ".join(f"{v} {100 * statistics.mean(a):.1f}%" for v, a in accs.items()) + ".")
    for key, what in (("convnet-plain", "without float shortcuts"), ("convnet", "with float shortcuts")):
        if not results.get(key, {}).get("runs"):
            continue
        gaps: dict[str, list[float]] = {}
        for row in results[key]["runs"]:
            if "no training" not in row["variant"] and "uniform" not in row["variant"]:
                gaps.setdefault(row["variant"], []).append(row["metrics"]["accuracy_gap"])
        ranked = sorted(gaps, key=lambda v: statistics.mean(gaps[v]))
        seeds = max(len(v) for v in gaps.values())
        item1 += (f" ConvNet-3 {what}, mean gap to float over {seeds} seed{'s' * (seeds != 1)}, smallest first: "
                  + "; ".join(f"{v} {100 * statistics.mean(gaps[v]):.1f}" for v in ranked) + " points.")
    if results.get("digits-width", {}).get("runs"):
        section = results["digits-width"]
        accs = _binary_means(section)
        item1 += (f" MobileNetV2 at width {section['width_mult']} on digits, 1 seed: "
                  + "; ".join(f"{v} {100 * statistics.mean(a):.1f}%" for v, a in accs.items())
                  + f" (float {100 * section['float']['metrics']['test_accuracy']:.1f}%).")
    summary.append(item1)
    rows = results.get("size", {}).get("rows", [])
    if rows:
        def ratio(width: float, variant: str) -> str:
            found = [r["ratio"] for r in rows if r["width_mult"] == width and r["variant"] == variant]
            return f"1/{found[0]:.2f} ({'met' if found[0] >= 12 else 'not met'})" if found else "-"
        xnor, bitat = "1-bit (W1/A1, xnor)", "1-bit (W1/A1, bitat: + RSign thresholds, RPReLU)"
        summary.append(f"2. Size (at most 1/12 of the float artifact; these sizes predate the default plan, whose "
                       f"ratios, every plan, are in quantize_plan.md): 1-bit MobileNetV2 at width 1.0: "
                       f"{ratio(1.0, bitat)} with bitat's tensors, {ratio(1.0, xnor)} with xnor's; at width "
                       f"0.5: bitat {ratio(0.5, bitat)}, xnor {ratio(0.5, xnor)}; with the per-channel "
                       f"vectors stored as float16 (`quant.vector_dtype=float16`, not the default: see its accuracy "
                       f"check below) bitat {ratio(0.5, bitat + ', float16 vectors')}, xnor "
                       f"{ratio(0.5, xnor + ', float16 vectors')}.")
    if "latency" in results:
        summary.append("3. CPU latency of the deployed network against the float one, and the XNOR-popcount "
                       "micro-benchmark: below.")
    summary += ["4. GPU preset for CIFAR-100: written, not run (below).",
                "5. Tests: tests/engines/quantize (pack/unpack exact, binarized layer = reference sign and scale, "
                "orthonormal transform after training steps, bottom-up order, 8-bit post-training under 0.5 "
                "points on digits, the four bad inputs, float shortcut maps and the deployed network with them "
                "against the reference, float16 vectors load back as exactly the rounded ones, the float "
                "adaptation phase: first, shortcuts on, no quantizer on, resumed bit-identical).", ""]
    out += _current_items(results) + summary
    if "digits" in results:
        section = results["digits"]
        seeds = sorted({row["seed"] for row in section["runs"]})
        same = all(row["metrics"]["test_accuracy"] == row["metrics"]["shadow_test_accuracy"]
                   for row in section["runs"])
        out += ["## W1/A1 on digits (MobileNetV2, width 0.5, stride-1 stem), float shortcuts on", "",
                "scikit-learn's 8x8 digits: 1,437 train / 360 test images. Every W1/A1 run uses `--preset digits` "
                "(the same 12 epochs, optimizer, distillation and calibration); accuracy is measured on the "
                "deployed network loaded back from the artifact (sign activations, unpacked binary weights, "
                "float shortcuts). Float shortcuts (`quant.float_shortcuts=true`, the default; our adaptation of "
                "Bi-Real Net / ReActNet to MobileNetV2): every binary-input conv computes "
                "BN(conv(sign(x))) + shortcut(x) on the float x, the shortcut parameter-free (identity; channel "
                "repetition for the expanding 1x1s; the mean of channel groups for the projecting 1x1s; 2x2 "
                "average pooling at stride 2), except the projecting conv of a residual block, whose float path "
                "is the block's own residual (a second one would double the block input at each of the 10 "
                "residual blocks). The same network for every method. "
                f"Seeds: {', '.join(map(str, seeds))}"
                + (" (one: the 75-minute budget of one-thread accuracy runs on the shared 2-core CPU did not "
                   "allow three)." if len(seeds) == 1 else ".")
                + _last_epoch_range(section)
                + (" In every run the deployed artifact scores exactly what the training-form network scores "
                   "(`test_accuracy` = `shadow_test_accuracy` in quantize.json)." if same else
                   " Deployed and training-form accuracies differ in some runs (quantize.json)."), ""]
        out += _run_table(section) + [""] + _commands(section) + [""]
    if "digits-plain" in results:
        section = results["digits-plain"]
        out += ["## Earlier: W1/A1 on digits (MobileNetV2) without float shortcuts", "",
                "The runs before float shortcuts existed (today `quant.float_shortcuts=false`), the same parent "
                "and preset. The uniform 2/4/8-bit rows keep their float inputs and get no shortcut, so they "
                "stand as measured.", ""]
        out += _run_table(section) + [""] + _commands(section) + [""]
    if "diagnose" in results:
        diag = results["diagnose"]
        out += ["## Diagnosis: why W1/A1 MobileNetV2 on digits (without float shortcuts) sits at chance", "",
                "Not a deployment bug: in every run above the deployed network loaded back from the artifact scores "
                "exactly what the training-form (float shadow) network scores (`shadow_test_accuracy` = "
                "`test_accuracy` in quantize.json), and the training accuracy itself stays at chance during QAT "
                "(run metrics). `benchmarks/quantize_diagnose.py` switches the engine's own XNOR quantizers on for "
                f"chosen layers of the float parent (test accuracy {100 * diag['float_test_accuracy']:.1f}%) and "
                f"fine-tunes everything ({diag['optimizer']}, {diag['rows'][0]['steps']} steps, one seed):", "",
                "| quantized | layers | train accuracy, last 25 steps (%) | test accuracy (%) | "
                "grad norm at the lowest quantized layer, step 0 |", "|---|---|---|---|---|"]
        for row in diag["rows"]:
            out.append(f"| {row['condition']} | {row['quantized_layers']} | "
                       f"{100 * row['train_accuracy_last_25_steps']:.1f} | {100 * row['test_accuracy']:.1f} | "
                       f"{row['bottom_layer_grad_norm_step0']:.3g} |")
        out += ["", "Binary weights alone train (W1/A32); binary activations are what the network cannot recover "
                "from. Width 0.5 leaves MobileNetV2's linear bottlenecks 8 to 80 channels wide, and on 8x8 digits "
                "they carry the whole signal: binarizing the inputs of a single block already costs 15 to 30 points, "
                "and with the inputs of the first five blocks binary even the float layers above cannot fit the "
                "training set in the budget; with every input binary the gradient reaching the lowest quantized "
                "layer is about 25x smaller than in the float network and 1000x smaller than with binary weights "
                "and float inputs. Seven of the 17 inverted-residual blocks have no shortcut, so the signal "
                "crosses three consecutive sign bottlenecks there. ReActNet and Bi-Real Net avoid this with a "
                "real-valued shortcut around every binary convolution and wide channels; plain MobileNetV2 has "
                "neither. The ConvNet below (binarized 64-channel layers, no narrow bottleneck) trains to within "
                "a few points of float with the same engine and budget.", "",
                "```", diag["command"], "```", ""]
    if "diagnose-shortcuts" in results:
        diag = results["diagnose-shortcuts"]
        plain = {row["condition"]: row for row in results.get("diagnose", {}).get("rows", [])}
        out += ["## Diagnosis repeated with float shortcuts", "",
                "`quantize_diagnose.py --float-shortcuts`: the same conditions, parent, optimizer and steps, with "
                "the real-valued shortcut around every binary-input layer (the engine's default now). Without: "
                "the table above.", "",
                "| quantized | train accuracy, last 25 steps (%): without -> with | test accuracy (%): without -> "
                "with | grad norm at the lowest quantized layer, step 0: without -> with |", "|---|---|---|---|"]
        for row in diag["rows"]:
            old = plain.get(row["condition"])
            def pair(key: str, scale: float, fmt: str, old=old, row=row) -> str:
                return (f"{format(scale * old[key], fmt)} -> " if old else "") + format(scale * row[key], fmt)
            out.append(f"| {row['condition']} | {pair('train_accuracy_last_25_steps', 100, '.1f')} | "
                       f"{pair('test_accuracy', 100, '.1f')} | {pair('bottom_layer_grad_norm_step0', 1, '.3g')} |")
        rows = {row["condition"]: row for row in diag["rows"]}
        every, one, two = ("W32/A1: binary inputs of all 51 layers", "W32/A1: binary inputs of block 1 (2 layers)",
                           "W32/A1: binary inputs of block 2 (3 layers, 8-channel bottleneck in)")
        if all(k in rows and k in plain for k in (every, one, two)):
            g0, g1 = plain[every]["bottom_layer_grad_norm_step0"], rows[every]["bottom_layer_grad_norm_step0"]
            out += ["", "The shortcuts do what they are for: with every input binary, the gradient reaching the "
                    f"lowest quantized layer at the first step grows from {g0:.3g} to {g1:.3g} ({g1 / g0:.0f}x). "
                    "They do not make this network trainable from its float parent at this budget, though: with "
                    f"every input binary the training accuracy reaches "
                    f"{100 * rows[every]['train_accuracy_last_25_steps']:.0f}% instead of "
                    f"{100 * plain[every]['train_accuracy_last_25_steps']:.0f}%, and with the inputs of one block "
                    f"binary it is lower than without shortcuts ({100 * rows[one]['train_accuracy_last_25_steps']:.0f}"
                    f"% against {100 * plain[one]['train_accuracy_last_25_steps']:.0f}% for block 1, "
                    f"{100 * rows[two]['train_accuracy_last_25_steps']:.0f}% against "
                    f"{100 * plain[two]['train_accuracy_last_25_steps']:.0f}% for block 2). A shortcut changes what "
                    "its layer computes (BN(conv(sign(x))) + shortcut(x) where the parent computed BN(conv(x))), so "
                    "fine-tuning starts further from the float parent, whose features were learned without "
                    "shortcuts. Bi-Real Net and ReActNet train their float (or binary-activation) networks with the "
                    "shortcuts already in place; the equivalent here would be a float MobileNetV2 trained with "
                    "them, which is an architecture option of mltk.nn, outside this engine. Inside the engine, "
                    "`train.adapt_epochs` now trains the float parent with its shortcuts on before QAT: see "
                    "\"MobileNetV2 on digits after a float adaptation phase\" below."]
        out += ["", "```", diag["command"], "```", ""]
    if "diagnose-kinds" in results:
        out += _kinds_report(results["diagnose-kinds"])
    if "digits-width" in results:
        section = results["digits-width"]
        out += [f"## W1/A1 on digits, MobileNetV2 at width {section['width_mult']}, float shortcuts on", "",
                f"Is width what stops W1/A1 MobileNetV2 at 0.5? The same data and `--preset digits` as above, a float "
                f"parent at width {section['width_mult']} (every layer {section['width_mult'] / 0.5:g}x as wide)."
                + _last_epoch_range(section), ""]
        out += _run_table(section) + [""] + _commands(section) + [""]
    for key, title in (("convnet", "W1/A1 on digits, ConvNet-3 (width 64, BatchNorm), float shortcuts on"),
                       ("convnet-plain", "W1/A1 on digits, ConvNet-3 (width 64, BatchNorm), without float shortcuts "
                                         "(earlier): the comparison where W1/A1 QAT trains at this budget"),
                       ("digits-long", "MobileNetV2 on digits with a longer QAT budget, float shortcuts on"),
                       ("digits-long-plain", "MobileNetV2 on digits with a longer QAT budget, without float "
                                             "shortcuts (earlier)"),
                       ("digits-adapt", "MobileNetV2 on digits after a float adaptation phase with the float "
                                        "shortcuts on")):
        if key not in results:
            continue
        section = results[key]
        if key in ("convnet", "convnet-plain"):
            note = ("Two of its four layers are binarized (the 3x3 convs 2 and 3, 64 channels in and out, so their "
                    "shortcuts are identities); the first conv and the classifier stay float. `--preset digits` "
                    "(12 epochs), the same budget for every variant. "
                    + ("With float shortcuts (the default)." if key == "convnet" else
                       "Measured before float shortcuts existed (today `quant.float_shortcuts=false`)."))
        elif key == "digits-adapt":
            note = _adapt_note(section, results)
        else:
            train_accs = ", ".join(f"{row['variant']} {100 * row['train_accuracy_by_epoch'][-1]:.1f}%"
                                   for row in section["runs"] if row.get("train_accuracy_by_epoch"))
            note = (f"The same parent as above; {section.get('epochs')} QAT epochs instead of the preset's 12 "
                    f"({section.get('epochs', 12) / 12:g}x the steps), one seed."
                    + (" Training accuracy stays at chance through every epoch (the run's metrics.jsonl)."
                       if key == "digits-long-plain" else "")
                    + (f" Training accuracy of the last epoch: {train_accs}." if train_accs else ""))
        out += [f"## {title}", "", note, ""] + _run_table(section) + [""] + _commands(section) + [""]
    if "cifar10" in results:
        section = results["cifar10"]
        zip_images = section.get("zip_images", 50000)
        source = "CIFAR-10 train JPEGs (../shared/data)" if zip_images == 50000 else \
            f"A class-balanced {zip_images:,}-image part of the CIFAR-10 train JPEGs (../shared/data)"
        out += [f"## W1/A1 on CIFAR-10 (MobileNetV2, width {section['width_mult']}, stride-1 stem)", "",
                f"Device: {section.get('device', 'cpu')}. "
                f"{source}: 5,000 held out as the test split, a seeded subset of "
                f"{section['train_images']:,} of the rest for training (both the float parent and QAT). "
                f"Every W1/A1 run uses `--preset cifar10-cpu` ({section.get('qat_epochs') or 5} epochs of QAT, "
                "the same for every method), with the default plan (blocks that narrow below 32 channels float) "
                "unless the variant says fully binarized, and MobileNetV2's branch gain (0.01); "
                "accuracy measured on the deployed network loaded back from the artifact, float shortcuts on."
                + _last_epoch_range(section) + " Training accuracy by epoch, seed 0: "
                + "; ".join(f"{row['variant']} " + " -> ".join(f"{100 * a:.1f}" for a in row["train_accuracy_by_epoch"])
                            for row in section["runs"] if row["seed"] == 0 and row.get("train_accuracy_by_epoch"))
                + "% (bitat binarizes bottom-up over the first half of the steps, reactnet binarizes activations "
                "first, weights second).", ""]
        out += _run_table(section) + [""] + _commands(section) + [""]
    else:
        out += ["## W1/A1 on CIFAR-10: left out", "",
                "Not run. A float MobileNetV2 on a CIFAR-10 subset plus five W1/A1 variants at an equal budget "
                "costs more than the one-thread accuracy budget of a session on this shared 2-core CPU (about 75 "
                "minutes), which went to the digits runs above; and at the digits budget W1/A1 MobileNetV2 stays "
                "near chance with and without float shortcuts, so a reduced CIFAR-10 run would most likely repeat "
                "that. The section is ready: `python benchmarks/quantize.py --section cifar10 --cifar-train 8000` "
                "(5,000 held out as test, `--preset cifar10-cpu`).", ""]
    out += ["## GPU preset (CIFAR-100, the paper's setting): not run", "",
            "`mltk/presets/quantize/cifar100-mobilenetv2.yaml` is written (its header holds the paper's claim: "
            "W1/A1 preserves the full-precision CIFAR-100 accuracy of compact backbones; the table values could "
            "not be read here) and is not run: CIFAR-100's images are not on this machine (20 test images "
            "only), and the one GPU lent (15 minutes) went to the CUDA checks of `gpu.md`.", ""]
    if "size" in results:
        out += ["## Size on disk", "",
                "model.safetensors of the float artifact against the quantized one (MobileNetV2 for CIFAR-10, "
                "10 classes). Float tensors (stem, classifier, BatchNorms folded into per-channel scale and "
                "bias, RSign/RPReLU, the remaining BatchNorms) are float32 by default; the rows marked "
                "\"float16 vectors\" store the per-channel vectors (everything but the packed codes and the "
                "stem and classifier weights) as float16 (`quant.vector_dtype=float16`). Float shortcuts add no "
                "tensor; the quantization plan, which the weights file's header carries too, now names each "
                "layer's shortcut (about 1.4 KB more than the sizes measured before them).", "",
                "| width | variant | float bytes | quantized bytes | float / quantized |", "|---|---|---|---|---|"]
        for row in results["size"]["rows"]:
            out.append(f"| {row['width_mult']} | {row['variant']} | {row['fp_bytes']:,} | {row['bytes']:,} | "
                       f"{row['ratio']:.2f} |")
        out += ["", "```", *sorted({r["command"] for r in results["size"]["rows"]}), "```", ""]
    if "fp16" in results:
        rows = results["fp16"]["rows"]
        changed = [r for r in rows if r["accuracy_float16"] != r["accuracy_float32"]]
        out += ["## float16 per-channel vectors: does accuracy change?", "",
                "Every artifact of the digits runs (MobileNetV2 with float shortcuts, and the uniform 2/4/8-bit "
                "runs) and of the ConvNet runs, loaded as `mltk eval` loads it (float32 vectors), then its tensors "
                "written again with float16 vectors and loaded back (`benchmarks/quantize_fp16_check.py`): test "
                f"accuracy changes in {len(changed)} of {len(rows)} artifacts.", "",
                "| artifact | test accuracy, float32 vectors (%) | float16 vectors (%) | predictions changed "
                "| largest logit change | weights bytes float32 -> float16 |", "|---|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {r['artifact']} | {100 * r['accuracy_float32']:.1f} | {100 * r['accuracy_float16']:.1f} | "
                       f"{r['predictions_changed']} of {r['test_images']} | {r['max_logit_difference']:.3g} | "
                       f"{r['bytes_float32']:,} -> {r['bytes_float16']:,} |")
        binary_mbv2 = [r for r in rows if r["artifact"].startswith("digits-") and "uniform" not in r["artifact"]]
        others = [r for r in rows if r not in binary_mbv2]
        if binary_mbv2 and others:
            def worst(group: list[dict]) -> str:
                delta = max(abs(r["accuracy_float16"] - r["accuracy_float32"]) for r in group)
                share = max(r["predictions_changed"] / r["test_images"] for r in group)
                return f"at most {100 * delta:.1f} points of accuracy and {100 * share:.0f}% of the predictions"
            out += ["", f"On the ConvNet and the uniform 2/4/8-bit networks float16 vectors change {worst(others)}; "
                    f"on the binary MobileNetV2s (near chance) {worst(binary_mbv2)}: a "
                    "sign input within rounding distance of its threshold flips, and through 51 binary layers one "
                    "flip changes much downstream. Accuracy is not unchanged everywhere, so float32 stays the "
                    "default and float16 is an option (`quant.vector_dtype=float16`)."]
        out += ["", "```", results["fp16"]["command"], "```", ""]
    if "latency" in results:
        lat = results["latency"]
        out += ["## CPU latency", "", lat["description"] + " The deployed binarized network is what `mltk eval` "
                "runs: the same float convolutions, on unpacked ±1 weights, plus a sign pass, a per-channel "
                "scale-and-bias pass and the float shortcut (an add, with channel repetition, group mean or "
                "pooling where shapes change) per binarized layer, so without a packed kernel it cannot be "
                "faster than the float network on a CPU (before float shortcuts it measured 1.94x the float "
                "time); the micro-benchmark below measures what a bit-packed XNOR-popcount inner "
                "product would give.", "", "| network | ms per batch (median) |", "|---|---|"]
        for row in lat["rows"]:
            out.append(f"| {row['label']} | {row['ms']:.1f} |")
        if len(lat["rows"]) == 2:
            out += ["", f"Binarized / float: {lat['rows'][1]['ms'] / lat['rows'][0]['ms']:.2f}x the time."]
        if lat.get("kernel"):
            out += ["", lat["kernel"]["description"], "",
                    "| layer shape (M x K -> N) | float32 matmul (ms) | XNOR-popcount (ms) | speed-up |",
                    "|---|---|---|---|"]
            for row in lat["kernel"]["rows"]:
                out.append(f"| {row['shape']} | {row['float_ms']:.3f} | {row['xnor_ms']:.3f} | "
                           f"{row['float_ms'] / row['xnor_ms']:.1f}x |")
        out += [""]
    MD_PATH.write_text("\n".join(out).rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--section", choices=["digits", "convnet", "digits-long", "digits-adapt", "diagnose",
                                              "diagnose-shortcuts", "diagnose-kinds", "digits-width",
                                              "cifar10", "size", "latency", "fp16"])
    parser.add_argument("--diagnose-steps", type=int, default=50)
    parser.add_argument("--no-uniform", action="store_true",
                        help="--section digits: leave out the 2/4/8-bit runs (unchanged by float shortcuts)")
    parser.add_argument("--long-epochs", type=int, default=36)
    parser.add_argument("--long-variants", nargs="+", default=["xnor"],
                        help="labels of BINARY_VARIANTS for --section digits-long")
    parser.add_argument("--adapt-epochs", type=int, default=6,
                        help="--section digits-adapt: train.adapt_epochs (runs add to those already measured)")
    parser.add_argument("--adapt-variants", nargs="+", default=["xnor", "bitat, pca transform"],
                        help="labels of BINARY_VARIANTS for --section digits-adapt")
    parser.add_argument("--digits-width", type=float, default=1.0,
                        help="--section digits-width: the float parent's model.options.width_mult")
    parser.add_argument("--width-variants", nargs="+", default=["xnor", "bitat, pca transform"],
                        help="labels of BINARY_VARIANTS for --section digits-width")
    parser.add_argument("--jobs", type=int, default=1,
                        help="mltk quantize processes at once (one thread each) in the cifar10 and digits-width sections")
    parser.add_argument("--report", action="store_true", help="only rewrite the markdown from the JSON")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("/tmp/mltk-bench-quantize"))
    parser.add_argument("--fp-epochs", type=int, default=40)
    parser.add_argument("--fp-lr", type=float, default=0.05, help="--section digits-width: the float parent's lr")
    parser.add_argument("--cifar-train", type=int, default=8000)
    parser.add_argument("--cifar-width", type=float, default=0.5)
    parser.add_argument("--cifar-epochs", type=int, default=None, help="--section cifar10: QAT epochs (every method)")
    parser.add_argument("--cifar-variants", nargs="+", default=None,
                        help="--section cifar10: labels of BINARY_VARIANTS / FULLY_BINARIZED_VARIANTS")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--vector-dtype", nargs="+", default=["float32", "float16"],
                        help="--section size: quant.vector_dtype values to measure")
    args = parser.parse_args()
    results = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {}
    if not args.report:
        if args.section is None:
            parser.error("give --section or --report")
        args.work.mkdir(parents=True, exist_ok=True)
        results["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, " \
                             f"Python {platform.python_version()}"
        def save(section: dict) -> None:
            # re-read first, so that a section run in another process at the same time is kept
            on_disk = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {}
            results.update({k: v for k, v in on_disk.items() if k != args.section})
            results[args.section] = section
            RESULTS.mkdir(exist_ok=True)
            JSON_PATH.write_text(json.dumps(results, indent=2) + "\n")
            write_report(results)

        if args.section == "digits":
            results["digits"] = section_digits(args.work, args.seeds, args.fp_epochs, save,
                                               with_uniform=not args.no_uniform)
        elif args.section == "convnet":
            results["convnet"] = section_convnet(args.work, args.seeds, save)
        elif args.section == "digits-long":
            results["digits-long"] = section_digits_long(args.work, args.long_epochs, args.long_variants, save)
        elif args.section == "digits-adapt":
            results["digits-adapt"] = section_digits_adapt(args.work, args.adapt_epochs, args.adapt_variants,
                                                           args.seeds, save)
        elif args.section == "diagnose":
            results["diagnose"] = section_diagnose(args.work, args.diagnose_steps)
        elif args.section == "diagnose-shortcuts":
            results["diagnose-shortcuts"] = section_diagnose(args.work, args.diagnose_steps, float_shortcuts=True)
        elif args.section == "diagnose-kinds":
            results["diagnose-kinds"] = section_diagnose_kinds(args.work, args.diagnose_steps)
        elif args.section == "cifar10":
            results["cifar10"] = section_cifar10(args.work, args.seeds, args.cifar_train, args.cifar_width,
                                                 args.fp_epochs, save, args.jobs, args.cifar_epochs,
                                                 args.cifar_variants)
        elif args.section == "digits-width":
            results["digits-width"] = section_digits_width(args.work, args.digits_width, args.width_variants,
                                                           args.seeds, save, args.jobs, args.fp_epochs, args.fp_lr)
        elif args.section == "size":
            results["size"] = section_size(args.work, args.vector_dtype)
        elif args.section == "fp16":
            results["fp16"] = section_fp16(args.work, results)
        else:
            results["latency"] = section_latency(args.work, args.repeats)
        save(results[args.section])
    write_report(results)
    print(MD_PATH.read_text())


if __name__ == "__main__":
    main()
