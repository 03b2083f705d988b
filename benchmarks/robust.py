"""The robust engine's figures: our PGD against torchattacks' (speed, agreement), the cost of a MAVRL
outer step against AQ's, and MAVRL against its baselines on few-shot tasks of unseen classes and unseen
domains, with the gradient-masking checks. Results are merged into benchmarks/results/robust.json;
benchmarks/results/robust.md is written by hand from it.

    python benchmarks/robust.py speed                       # PGD vs torchattacks; MAVRL vs AQ step cost
    python benchmarks/robust.py fewshot --seeds 0 --steps 100 --tasks 50
    python benchmarks/robust.py masking --seeds 0 --tasks 20 # needs the fewshot run's artifacts
    python benchmarks/robust.py fewshot --seeds 0 --tasks 600 --reuse --domains mnist  # more tasks, same models
    python benchmarks/robust.py summary --tasks 50          # mean and spread over the seeds, as markdown

Data: the shared data folder (--data-dir, default ../shared/data next to the repository): Omniglot's
background zips for meta-training, Omniglot's held-out characters, MNIST test, USPS and DTD for the tests.
Every method runs with the same encoder, data, tasks and number of outer steps.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
JSON_PATH = HERE / "results" / "robust.json"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
METHODS = ("mavrl", "aq", "adml", "maml", "rocl")
DOMAINS = ("omniglot-unseen", "mnist", "usps", "dtd")


def _current(section: str) -> dict:
    return json.loads(JSON_PATH.read_text()).get(section, {}) if JSON_PATH.exists() else {}


def merge(section: str, figures: dict) -> None:
    """Rewrite ``section`` of robust.json (under a lock: sections may be written by parallel runs)."""
    with open(JSON_PATH.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {}
        data[section] = {**figures, "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}",
                         "threads": torch.get_num_threads(),
                         "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        JSON_PATH.write_text(json.dumps(data, indent=1) + "\n")


# ---------------------------------------------------------------- speed


def speed(args) -> None:
    from mltk.engines.robust.attacks import pgd
    from mltk.engines.robust.attacks.autoattack import torchattacks_pgd
    from mltk.nn import build_model

    torch.manual_seed(0)
    model = build_model("convnet", num_classes=10, in_channels=3, image_size=32, mean=[0.5] * 3, std=[0.25] * 3,
                        width=64, depth=3, norm="batchnorm").eval()
    images, labels = torch.rand(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    kwargs = dict(eps=8 / 255, step_size=2 / 255, steps=args.pgd_steps)
    ours_s, theirs_s = [], []
    for rep in range(args.reps + 1):  # alternated, each going first in turn; the first pair warms up, dropped
        times = {}
        for who in (("theirs", "ours") if rep % 2 else ("ours", "theirs")):
            torch.manual_seed(rep)
            t = time.perf_counter()
            if who == "ours":
                ours = pgd(model, images, labels, **kwargs)
            else:
                theirs = torchattacks_pgd(model, images, labels, **kwargs)
            times[who] = time.perf_counter() - t
        if rep:
            ours_s.append(times["ours"])
            theirs_s.append(times["theirs"])
    with torch.no_grad():
        same_prediction = (model(ours).argmax(1) == model(theirs).argmax(1)).double().mean().item()
    pgd_figures = {"model": "ConvNet-3 width 64 batchnorm, 32x32x3", "batch": args.batch, "steps": args.pgd_steps,
                   "reps": args.reps, "ours_median_s": statistics.median(ours_s),
                   "torchattacks_median_s": statistics.median(theirs_s),
                   "speed_ratio_torchattacks_over_ours": statistics.median(theirs_s) / statistics.median(ours_s),
                   "max_abs_difference": (ours - theirs).abs().max().item(),
                   "same_prediction": same_prediction}
    print(json.dumps(pgd_figures, indent=1))
    merge("pgd_speed", pgd_figures)
    if args.outer_steps:
        merge("outer_step_cost", outer_step_cost(args))


def outer_step_cost(args) -> dict:
    from mltk.engines.robust.domains import load_domain
    from mltk.engines.robust.fewshot_net import FewShotNet
    from mltk.engines.robust.mavrl_recipe import MetaLearner

    pool = load_domain("omniglot", image_size=28, channels=1, data_dir=args.data_dir)
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    for step in range(args.outer_steps + 1):
        for method in METHODS:
            cfg = _config(method, width=args.width)
            torch.manual_seed(0)
            net = FewShotNet(encoder="conv4", in_channels=1, image_size=28, width=args.width, n_way=5,
                             projection_dim=64)
            learner = MetaLearner(net, cfg, pool, rank=0, tasks_per_rank=cfg.task.meta_batch)
            t = time.perf_counter()
            loss, _ = learner(step)
            loss.backward()
            if step:
                seconds[method].append(time.perf_counter() - t)
    figures = {m: statistics.median(s) for m, s in seconds.items()}
    figures = {"seconds_per_outer_step": figures, "mavrl_over_aq": figures["mavrl"] / figures["aq"],
               "setting": f"Conv4 width {args.width}, 5-way 1-shot, 5 queries, meta-batch 4, PGD-3 training attacks, "
                          f"median of {args.outer_steps} steps, methods alternated"}
    print(json.dumps(figures, indent=1))
    return figures


def _config(method: str, *, width: int, steps: int = 100, seed: int = 0, data_dir: str | None = None):
    from mltk.core.config import build
    from mltk.engines.robust.config import MavrlConfig

    return build(MavrlConfig, {
        "method": method, "seed": seed, "name": f"{method}-s{seed}", "device": "cpu",
        "data": {"domain": "omniglot", "data_dir": data_dir}, "model": {"width": width},
        "train": {"steps": steps, "log_every": max(1, steps // 4)}, "eval": {"tasks": 0}})


# ---------------------------------------------------------------- few-shot robustness


def _pools(args) -> dict:
    from mltk.engines.robust.domains import load_domain
    from mltk.engines.robust.episodes import split_classes

    omniglot = load_domain("omniglot", image_size=28, channels=1, data_dir=args.data_dir)
    pools = {"omniglot-unseen": split_classes(omniglot, train_share=0.7, seed=0)[1]}
    for name in DOMAINS[1:]:
        pools[name] = load_domain(name, image_size=28, channels=1, data_dir=args.data_dir)
    return pools


def fewshot(args) -> None:
    from mltk.core.catalog import get_recipe
    from mltk.core.console import Reporter
    from mltk.core.registry import Registry
    from mltk.core.run_recipe import run_recipe
    from mltk.engines.robust.artifact import load_fewshot_net
    from mltk.engines.robust.attacks.classifier import AttackSettings
    from mltk.engines.robust.fewshot_eval import FewShotSettings, evaluate_fewshot

    home = Path(args.home)
    registry = Registry(home / "home")
    pools = _pools(args)
    attack = AttackSettings(name="pgd", eps=8 / 255, step_size=2 / 255, steps=20, random_start=True)
    for seed in args.seeds:
        section = _fewshot_section(seed, args.tasks)
        data = json.loads(JSON_PATH.read_text()).get(section, {}) if JSON_PATH.exists() else {}
        rows = data.get("rows", [])
        trained = {(r["method"], r["seed"]): r for r in _current(_fewshot_section(seed, 50)).get("rows", [])}
        for method in args.methods:
            earlier = trained.get((method, seed)) if args.reuse else None
            if earlier is not None:  # the model the 50-task run trained, scored again on more tasks
                artifact, train_s = earlier["artifact"], earlier["train_s"]
            else:
                cfg = _config(method, width=args.width, steps=args.steps, seed=seed, data_dir=args.data_dir)
                started = time.perf_counter()
                artifact = run_recipe(get_recipe("mavrl"), cfg, resume=None, runs_root=home / "runs",
                                      registry=registry, reporter=Reporter("quiet"))["artifact"]
                train_s = time.perf_counter() - started
            net, _, _ = load_fewshot_net(str(registry.resolve(artifact).path))
            row = {"method": method, "seed": seed, "artifact": artifact, "train_s": round(train_s, 1)}
            for domain, pool in pools.items():
                if domain not in args.domains:
                    continue
                queries = 5 if domain == "dtd" else args.queries  # DTD's subset has 6 images a class
                settings = FewShotSettings(n_way=5, k_shot=1, queries=queries, tasks=args.tasks, seed=0,
                                           adaptation="finetune", test_steps=10, inner_lr=0.1)
                scores = evaluate_fewshot(net, pool, settings, attack, torch.device("cpu"))
                row[domain] = {k: round(v, 4) for k, v in scores.items()}
            print(json.dumps(row), flush=True)
            rows = [r for r in rows if not (r["method"] == method and r["seed"] == seed)] + [row]
            merge(section, {"rows": rows, "home": str(home), "setting": _setting(args)})


def _fewshot_section(seed: int, tasks: int) -> str:
    """One section per seed (seeds run in parallel) and number of test tasks."""
    section = "fewshot" if seed == 0 else f"fewshot_seed{seed}"
    return section if tasks == 50 else f"{section}_tasks{tasks}"


def _mean_spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f}" + (f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else "")


def summary(args) -> None:
    """Markdown: per method and domain, the mean over seeds of clean / robust accuracy, with the seeds' spread."""
    data = json.loads(JSON_PATH.read_text())
    rows = [row for seed in (0, 1, 2, 3, 4) for row in data.get(_fewshot_section(seed, args.tasks), {}).get("rows", [])]
    print(f"| method | seeds | {' | '.join(DOMAINS)} |")
    print("|---|---|" + "---|" * len(DOMAINS))
    for method in METHODS:
        mine = [row for row in rows if row["method"] == method]
        if not mine:
            continue
        cells = []
        for domain in DOMAINS:
            if any(domain not in row for row in mine):
                cells.append("-")
                continue
            clean = [100 * row[domain]["clean_accuracy"] for row in mine]
            robust = [100 * row[domain]["robust_accuracy"] for row in mine]
            cells.append(f"{_mean_spread(clean)} / **{_mean_spread(robust)}**")
        print(f"| {method} | {', '.join(str(row['seed']) for row in mine)} | {' | '.join(cells)} |")


def _setting(args) -> str:
    return (f"meta-train on Omniglot background characters (70% of 242, seed 0), Conv4 width {args.width}, "
            f"5-way 1-shot, 5 queries, meta-batch 4, {args.steps} outer steps, first-order, 1 inner step (lr 0.1), "
            f"training attacks PGD-3 eps 8/255 step 2/255; test: {args.tasks} 5-way 1-shot tasks per domain "
            f"(task seed 0, {args.queries} queries a class, DTD 5), 10 fine-tuning steps, PGD-20 eps 8/255 "
            f"step 2/255 random start")


def masking(args) -> None:
    """PGD with more steps and restarts never scores higher, PGD <= FGSM, a large eps reaches 0, AutoAttack <= PGD."""
    from mltk.core.registry import Registry
    from mltk.engines.robust.artifact import load_fewshot_net
    from mltk.engines.robust.attacks.autoattack import autoattack
    from mltk.engines.robust.attacks.classifier import AttackSettings, attack
    from mltk.engines.robust.episodes import sample_task, task_generator
    from mltk.engines.robust.fewshot_eval import FewShotSettings, adapted_classifier

    data = json.loads(JSON_PATH.read_text())
    rows = [row for seed in args.seeds for row in data.get(_fewshot_section(seed, 50), {}).get("rows", [])]
    pools = _pools(args)
    pool = pools["mnist"]
    attacks = {"fgsm": AttackSettings(name="fgsm"),
               "pgd5": AttackSettings(steps=5), "pgd20": AttackSettings(steps=20), "pgd50": AttackSettings(steps=50),
               "pgd20x3restarts": AttackSettings(steps=20, restarts=3),
               "pgd50_eps0.3": AttackSettings(eps=0.3, step_size=0.03, steps=50),
               "pgd100_eps0.5": AttackSettings(eps=0.5, step_size=0.02, steps=100)}
    out = {}
    for row in rows:
        if row["seed"] not in args.seeds or row["method"] not in args.methods:
            continue
        registry = Registry(Path(data[_fewshot_section(row["seed"], 50)]["home"]) / "home")
        net, _, _ = load_fewshot_net(str(Path(registry.resolve(row["artifact"]).path)))
        settings = FewShotSettings(n_way=5, k_shot=1, queries=args.queries, test_steps=10, inner_lr=0.1)
        correct = {name: 0 for name in [*attacks, "clean", "autoattack", "pgd20_on_aa_tasks"]}
        counted, aa_counted = 0, 0
        for t in range(args.tasks):
            task = sample_task(pool, n_way=5, k_shot=1, queries=args.queries, generator=task_generator(0, 104729, t))
            classifier = adapted_classifier(net, task.support, task.support_labels, settings)
            y = task.query_labels
            with torch.no_grad():
                correct["clean"] += (classifier(task.query).argmax(1) == y).sum().item()
            for name, settings_ in attacks.items():
                adv = attack(classifier, task.query, y, settings_, generator=task_generator(0, 15485863, t))
                with torch.no_grad():
                    hit = (classifier(adv).argmax(1) == y).sum().item()
                correct[name] += hit
                if name == "pgd20" and t < args.aa_tasks:
                    correct["pgd20_on_aa_tasks"] += hit
            if t < args.aa_tasks:
                adv = autoattack(classifier, task.query, y, eps=8 / 255, num_classes=5)
                with torch.no_grad():
                    correct["autoattack"] += (classifier(adv).argmax(1) == y).sum().item()
                aa_counted += len(y)
            counted += len(y)
        figures = {k: v / (aa_counted if k in ("autoattack", "pgd20_on_aa_tasks") else counted)
                   for k, v in correct.items()}
        figures["checks"] = {
            "more_steps_never_higher": figures["pgd50"] <= figures["pgd20"] <= figures["pgd5"],
            "restarts_never_higher": figures["pgd20x3restarts"] <= figures["pgd20"],
            "pgd_at_most_fgsm": figures["pgd20"] <= figures["fgsm"],
            "large_eps_reaches_zero": min(figures["pgd50_eps0.3"], figures["pgd100_eps0.5"]) == 0.0,
            "autoattack_not_above_pgd": figures["autoattack"] <= figures["pgd20_on_aa_tasks"]}
        key = f"{row['method']}-s{row['seed']}"
        out[key] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}
        print(key, json.dumps(out[key]), flush=True)
        merge("masking", {"models": {**_current("masking").get("models", {}), **out},
                          "setting": f"MNIST, {args.tasks} 5-way 1-shot tasks (task seed 0, {args.queries} queries a "
                                     f"class), AutoAttack (standard, torchattacks) on the first {args.aa_tasks}"})


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=("speed", "fewshot", "masking", "summary"))
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--home", default=str(Path(tempfile.gettempdir()) / "mltk-robust-bench"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--aa-tasks", type=int, default=3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--outer-steps", type=int, default=5)
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS,
                        help="fewshot: the test domains to score")
    parser.add_argument("--reuse", action="store_true",
                        help="fewshot: score the models the 50-task run trained instead of training again")
    args = parser.parse_args(argv)
    {"speed": speed, "fewshot": fewshot, "masking": masking, "summary": summary}[args.section](args)


if __name__ == "__main__":
    main(sys.argv[1:])
