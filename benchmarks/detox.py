"""ADLM against the base LM, DAPT and DExperts on RealToxicityPrompts, offline, on one machine.

Every model is trained here by the real commands (listed in the results):

1. ``mltk train toxicity-scorer``     the judge of toxicity: char n-gram TF-IDF + logistic regression on
                                      Davidson part [0.7, 1), with its held-out accuracy;
2. ``mltk train lm``                  the base LM (GPT-2 architecture, 4 x 128, the real GPT-2 BPE) on
                                      WikiText-2 + Davidson part [0, 0.4) (83% offensive tweets);
3. ``mltk train lm --preset tiny-judge``  the perplexity judge (4 x 128, another seed, same text);
4. ``mltk train adlm|dapt|dexperts lm=gpt2-tiny-toxic``  on Davidson part [0.4, 0.7).

Then, in one process, for the toxic and the non-toxic RealToxicityPrompts
files (the DecodingTrust subset; the first ``--prompts`` of each): 25
continuations of 20 tokens per prompt, top-p 0.9, scored by the scorer and the
judge, for each method. Speed is measured side by side: ``--rounds`` rounds
of the same prompts, the methods in turn prompt by prompt (their order rotating
each round); each method's ratio to the base LM is taken within a round and
the median over rounds reported.
Peak memory is measured with each method alone in a fresh process
(``benchmarks/detox_memory.py``).

Each (prompt set, method) evaluation is cached under ``--home`` (metrics and
the scored continuations), keyed by the prompt count, samples and seed, so an
interrupted run loses at most the evaluation in progress, and the quality
part (an accuracy run) and the speed/memory part (a timing run, under the
shared benchmark lock) can run as separate invocations::

    python benchmarks/detox.py --prompts 30 --skip speed memory                # quality, cached
    flock /tmp/mltk-bench.lock python benchmarks/detox.py --prompts 30 --speed-prompts 4 --rounds 3

    MLTK_DATA=/path/to/shared/data python benchmarks/detox.py              # about 1.5 h on 2 CPU cores
    python benchmarks/detox.py --prompts 20 --samples 10 --rounds 2        # a quick look

Writes benchmarks/results/detox.md and detox.json. Artifacts and runs go to
``--home`` (default /tmp/mltk-detox-bench), so a second invocation reuses them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
RTP = "toxicity/realtoxicityprompts_decodingtrust_subset"
LM = "gpt2-tiny-toxic"
JUDGE = "gpt2-tiny-judge"
SCORER = "toxicity-scorer"
METHODS = {"base": LM, "dapt": "dapt-gpt2-tiny-toxic", "dexperts": "dexperts-gpt2-tiny-toxic",
           "adlm": "adlm-gpt2-tiny-toxic"}
TRAIN_COMMANDS = [
    (SCORER, ["train", "toxicity-scorer"]),
    (LM, ["train", "lm"]),
    (JUDGE, ["train", "lm", "--preset", "tiny-judge"]),
    (METHODS["adlm"], ["train", "adlm", f"lm={LM}"]),
    (METHODS["dapt"], ["train", "dapt", f"lm={LM}"]),
    (METHODS["dexperts"], ["train", "dexperts", f"lm={LM}"]),
]


def mltk(*args: str, env: dict) -> dict:
    """Run an mltk command with --format json; its JSON output."""
    command = [sys.executable, "-m", "mltk", *args, "--format", "json"]
    print("$ mltk " + " ".join(args), file=sys.stderr, flush=True)
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mltk {' '.join(args)} failed with exit code {done.returncode}")
    return json.loads(done.stdout)


ABLATIONS = {"adlm-nodisc-gpt2-tiny-toxic": ["train", "adlm", f"lm={LM}", "adlm.lambda_disc=0",
                                             "name=adlm-nodisc-gpt2-tiny-toxic"],
             "adlm-noewc-gpt2-tiny-toxic": ["train", "adlm", f"lm={LM}", "adlm.lambda_ewc=0",
                                            "name=adlm-noewc-gpt2-tiny-toxic"]}


# how the heads that --compare-adlm is used with here were trained
COMPARED = {"adlm-gpt2-tiny-toxic:1": ("mltk train adlm lm=gpt2-tiny-toxic", "at commit 021f2c5: the first objective, "
                                      "the discriminator on the projection under the gold e_a"),
            "adlm-nosteer-gpt2-tiny-toxic:1": ("mltk train adlm lm=gpt2-tiny-toxic adlm.lambda_steer=0 "
                                               "name=adlm-nosteer-gpt2-tiny-toxic", "no steering term"),
            "adlm-steer0.1-gpt2-tiny-toxic:1": ("mltk train adlm lm=gpt2-tiny-toxic adlm.lambda_steer=0.1 "
                                                "name=adlm-steer0.1-gpt2-tiny-toxic", "a tenth of the steering term")}


SHOWN_METRICS = ("test_balanced_accuracy", "test_roc_auc", "extra0_balanced_accuracy", "perspective_roc_auc",
                 "perspective_spearman", "val_perplexity", "train_tokens_seen", "parameters", "added_parameters",
                 "val_nontoxic_perplexity", "val_toxic_perplexity", "val_discriminator_accuracy", "val_steer_accuracy",
                 "val_expert_nontoxic_perplexity", "val_antiexpert_toxic_perplexity")


def train_all(env: dict, *, ablation: bool) -> dict:
    from mltk.core.errors import ArtifactError
    from mltk.core.registry import Registry

    registry = Registry(env["MLTK_HOME"])
    trained = {}
    for name, args in TRAIN_COMMANDS + (list(ABLATIONS.items()) if ablation else []):
        try:
            record = registry.resolve(name)
            print(f"reusing {record.ref}", file=sys.stderr)
        except ArtifactError:
            mltk(*args, "--resume", "auto", env=env)
            record = registry.resolve(name)
        card = record.card()
        trained[name] = {"ref": record.ref, "command": "mltk " + " ".join(args), "metrics": card.get("metrics"),
                         "wall_time_s": _run_wall_time(card)}
    return trained


def _run_wall_time(card: dict) -> str | None:
    results = Path(card.get("run_dir", "")) / "results.json"
    if not results.is_file():
        return None
    done = json.loads(results.read_text())
    total = done.get("wall_time_total_s")  # across resumes (runs before it was recorded have only the last part)
    if total is not None:
        return f"{total:.0f} s"
    seconds = done.get("wall_time_s")
    if seconds is None:
        return None
    return f"{seconds:.0f} s" + (" (after a resume: the last part only)" if done.get("resumed_from") else "")


def cached(args, env: dict, key: str, compute, *, ref: str | None = None) -> dict:
    """The metrics of one evaluation, from ``--home`` when an earlier run with the same settings made them.

    ``ref`` is the artifact evaluated (name:version): a cached result of another version is measured again.
    """
    folder = Path(env["MLTK_HOME"]).parent / "quality"
    path = folder / f"{key.replace('/', '-')}-p{args.prompts}-n{args.samples}-s0.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if ref is None or stored.get("ref", ref) == ref:
            print(f"reusing {path}", file=sys.stderr, flush=True)
            return {**stored["metrics"], "unk_run_share": unk_run_share(stored["records"]),
                    "measured": stored["measured"], **({"ref": ref} if ref else {})}
    metrics, records = compute()
    metrics["unk_run_share"] = unk_run_share(records)
    measured = f"{time.strftime('%Y-%m-%d %H:%M')}, `python benchmarks/detox.py {' '.join(sys.argv[1:])}`"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": metrics, "measured": measured, "ref": ref, "records": records}) + "\n")
    return {**metrics, "measured": measured, **({"ref": ref} if ref else {})}


def unk_run_share(records: list[dict]) -> float:
    """Share of continuations with a run of WikiText's ``<unk>`` marker ("unk>unk>"): the LM's degenerate mode."""
    texts = [g["text"] for r in records for g in r["generations"]]
    return sum("unk>unk>" in t for t in texts) / max(len(texts), 1)


def setting_label(setting: dict) -> str:
    return "".join(f"-{'a' if k == 'alpha' else 'f'}{v:g}" for k, v in sorted(setting.items()))


def validate(args, env: dict) -> dict:
    """ADLM's (alpha, filter_p) and DExperts' alpha, chosen on validation prompts: the last
    ``--validation-prompts`` of toxic.jsonl, disjoint from the test prompts (its first ``--prompts``).

    The rule, the issue's own bar: the lowest expected maximum toxicity among the settings whose judge
    perplexity is within 20% of the base LM's on the same prompts; when none is, the lowest perplexity.
    """
    from mltk.core.registry import Registry
    from mltk.data.text.sources import read_prompts
    from mltk.engines.detox.methods import load_method
    from mltk.engines.detox.protocols import ToxicityOptions, toxicity_evaluation
    from mltk.engines.detox.scorers import load_classifier_scorer
    from mltk.nn.language_models.causal_lm import load_causal_lm

    registry = Registry(env["MLTK_HOME"])
    every = read_prompts(Path(env["MLTK_DATA"]) / RTP / "toxic.jsonl")
    if args.validation_prompts + args.prompts > len(every):
        raise SystemExit(f"--validation-prompts {args.validation_prompts} + --prompts {args.prompts} exceed the "
                         f"{len(every)} toxic prompts: the validation and test prompts would overlap")
    prompts = every[-args.validation_prompts:]
    scorer = load_classifier_scorer(SCORER, registry=registry)
    judge = load_causal_lm(JUDGE, registry=registry)
    grid = {"base": [{}], "adlm": [{"alpha": a, "filter_p": f} for f in args.adlm_filters for a in args.adlm_alphas],
            "dexperts": [{"alpha": a} for a in args.dexperts_alphas]}
    rows: dict[str, dict] = {}
    for name, settings in grid.items():
        for setting in settings:
            def compute(name=name, setting=setting):
                return toxicity_evaluation(load_method(METHODS[name], registry=registry), prompts, scorer=scorer,
                                           judge=judge, device=torch.device("cpu"),
                                           options=ToxicityOptions(n=args.samples, max_new_tokens=20, top_p=0.9,
                                                                   seed=0, **setting))

            key = f"validation-last{args.validation_prompts}/{name}{setting_label(setting)}"
            metrics = cached(args, env, key, compute, ref=registry.resolve(METHODS[name]).ref)
            rows[f"{name}{setting_label(setting)}"] = {"method": name, "setting": setting, **metrics}
            print(f"validation {name}{setting_label(setting)} EMT {metrics['expected_max_toxicity']:.3f}  PPL "
                  f"{metrics['perplexity']:.1f}", file=sys.stderr, flush=True)
    bound = 1.2 * rows["base"]["perplexity"]
    chosen = {}
    for name in ("adlm", "dexperts"):
        candidates = [r for r in rows.values() if r["method"] == name]
        fluent = [r for r in candidates if r["perplexity"] <= bound]
        best = (min(fluent, key=lambda r: r["expected_max_toxicity"]) if fluent
                else min(candidates, key=lambda r: r["perplexity"]))
        chosen[name] = {"setting": best["setting"], "within_bound": bool(fluent)}
    return {"prompts": f"the last {args.validation_prompts} of toxic.jsonl", "perplexity_bound": bound,
            "rows": rows, "chosen": chosen}


def quality(args, env: dict, chosen: dict) -> dict:
    """Toxicity, perplexity and diversity of every method on both prompt sets (``chosen``: decoding settings per
    method, from :func:`validate`; the artifacts' defaults otherwise)."""
    from mltk.core.registry import Registry
    from mltk.data.text.sources import read_prompts
    from mltk.engines.detox.methods import load_method
    from mltk.engines.detox.protocols import ToxicityOptions, toxicity_evaluation
    from mltk.engines.detox.scorers import load_classifier_scorer
    from mltk.nn.language_models.causal_lm import load_causal_lm

    registry = Registry(env["MLTK_HOME"])
    device = torch.device("cpu")
    scorer = load_classifier_scorer(SCORER, registry=registry)
    judge = load_causal_lm(JUDGE, registry=registry)
    options = ToxicityOptions(n=args.samples, max_new_tokens=20, top_p=0.9, seed=0)
    out = {}
    for subset in ("toxic", "nontoxic"):
        prompts = read_prompts(Path(env["MLTK_DATA"]) / RTP / f"{subset}.jsonl")[:args.prompts]
        for name, ref in METHODS.items():
            setting = chosen.get(name, {}).get("setting", {})

            def compute(ref=ref, prompts=prompts, setting=setting):
                method = load_method(ref, registry=registry)
                started = time.perf_counter()
                metrics, records = toxicity_evaluation(method, prompts, scorer=scorer, judge=judge,
                                                       options=dataclasses.replace(options, **setting),
                                                       device=device)
                metrics["wall_s"] = time.perf_counter() - started
                return metrics, records

            metrics = out[f"{subset}/{name}"] = cached(args, env, f"{subset}/{name}{setting_label(setting)}",
                                                       compute, ref=registry.resolve(ref).ref)
            print(f"{subset:8s} {name:8s} EMT {metrics['expected_max_toxicity']:.3f}  TP "
                  f"{metrics['toxicity_probability']:.3f}  PPL {metrics['perplexity']:.1f}  dist-2 "
                  f"{metrics['dist_2']:.3f}  {metrics['tokens_per_s']:.0f} tok/s", file=sys.stderr, flush=True)
    if args.ablation:
        prompts = read_prompts(Path(env["MLTK_DATA"]) / RTP / "toxic.jsonl")[:args.prompts]
        for name in ABLATIONS:
            def compute(name=name):
                return toxicity_evaluation(load_method(name, registry=registry), prompts, scorer=scorer,
                                           judge=judge, options=options, device=device)

            metrics = out[f"toxic/{name}"] = cached(args, env, f"toxic/{name}", compute)
            print(f"toxic    {name} EMT {metrics['expected_max_toxicity']:.3f}  PPL {metrics['perplexity']:.1f}",
                  file=sys.stderr, flush=True)
    for alpha in args.alphas:
        prompts = read_prompts(Path(env["MLTK_DATA"]) / RTP / "toxic.jsonl")[:args.prompts]
        sweep = ToxicityOptions(n=args.samples, max_new_tokens=20, top_p=0.9, seed=0, alpha=alpha)

        def compute(sweep=sweep, prompts=prompts):
            return toxicity_evaluation(load_method(METHODS["adlm"], registry=registry), prompts, scorer=scorer,
                                       judge=judge, options=sweep, device=device)

        metrics = out[f"toxic/adlm-alpha-{alpha:g}"] = cached(args, env, f"toxic/adlm-alpha-{alpha:g}", compute,
                                                              ref=registry.resolve(METHODS["adlm"]).ref)
        print(f"toxic    adlm a={alpha:g} EMT {metrics['expected_max_toxicity']:.3f}  PPL "
              f"{metrics['perplexity']:.1f}", file=sys.stderr, flush=True)
    for compared in args.compare_adlm:  # other ADLM heads (e.g. the first, label-reading version), same alphas
        prompts = read_prompts(Path(env["MLTK_DATA"]) / RTP / "toxic.jsonl")[:args.prompts]
        ref = registry.resolve(compared).ref
        card_alpha = float(registry.resolve(ref).card().get("decoding", {}).get("alpha", 2.0))
        for alpha in [card_alpha, *args.alphas]:
            sweep = ToxicityOptions(n=args.samples, max_new_tokens=20, top_p=0.9, seed=0, alpha=alpha)

            def compute(sweep=sweep, prompts=prompts, ref=ref):
                return toxicity_evaluation(load_method(ref, registry=registry), prompts, scorer=scorer, judge=judge,
                                           options=sweep, device=device)

            key = f"toxic/{ref}-alpha-{alpha:g}"
            metrics = out[key] = cached(args, env, key, compute, ref=ref)
            print(f"toxic    {ref} a={alpha:g} EMT {metrics['expected_max_toxicity']:.3f}  PPL "
                  f"{metrics['perplexity']:.1f}", file=sys.stderr, flush=True)
    return out


def speed(args, env: dict, chosen: dict) -> dict:
    """Tokens per second of each method on the same prompts, interleaved prompt by prompt (the methods' order
    rotating each round), so that other load on the machine falls on every method alike; the ratio to the base
    LM is taken within each round (paired) and its median reported.

    Each method decodes with its ``chosen`` settings (those of the quality rows); when ADLM's steers within a
    nucleus (filter_p < 1: a second head product and a second nucleus per token), ``adlm-filter_p-1`` also
    times it steering every token (the artifact's default), for the cost of that choice."""
    from mltk.core.registry import Registry
    from mltk.data.text.sources import read_prompts
    from mltk.engines.detox.generation import GenerationStats, Sampling, generate
    from mltk.engines.detox.methods import load_method

    registry = Registry(env["MLTK_HOME"])
    prompts = [p.text for p in read_prompts(Path(env["MLTK_DATA"]) / RTP / "nontoxic.jsonl")[:args.speed_prompts]]
    loaded = {name: load_method(ref, registry=registry) for name, ref in METHODS.items()}
    settings = {name: chosen.get(name, {}).get("setting", {}) for name in loaded}
    methods = dict(loaded)
    if settings["adlm"].get("filter_p", 1.0) < 1.0:
        methods["adlm-filter_p-1"] = loaded["adlm"]
        settings["adlm-filter_p-1"] = {**settings["adlm"], "filter_p": 1.0}
    names = list(methods)
    modes = {"top_p": Sampling(max_new_tokens=20), "greedy": Sampling(max_new_tokens=20, temperature=0)}
    rates: dict[str, dict[str, list[float]]] = {mode: {name: [] for name in names} for mode in modes}
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        stats = {(mode, name): GenerationStats() for mode in modes for name in names}
        for prompt in prompts:
            for name in order:
                method = methods[name]
                for mode, sampling in modes.items():
                    generate(lambda m=method, n=name: m.decoder(**settings[n]), method.tokenizer, [prompt],
                             n=args.samples, sampling=sampling,
                             seed=round_index, device=torch.device("cpu"), context=method.context,
                             stats=stats[mode, name])
        for (mode, name), measured in stats.items():
            rates[mode][name].append(measured.tokens_per_s)
        print(f"round {round_index + 1}: " + "  ".join(f"{k} {v[-1]:.0f} (greedy {rates['greedy'][k][-1]:.0f})"
                                                        for k, v in rates["top_p"].items()), file=sys.stderr,
              flush=True)

    def paired(mode: str, name: str, against: str) -> float:
        return statistics.median(a / b for a, b in zip(rates[mode][name], rates[mode][against], strict=True))

    return {name: {"tokens_per_s_median": statistics.median(rates["top_p"][name]),
                   "tokens_per_s": rates["top_p"][name],
                   "greedy_tokens_per_s_median": statistics.median(rates["greedy"][name]),
                   "greedy_tokens_per_s": rates["greedy"][name],
                   "vs_base": paired("top_p", name, "base"), "greedy_vs_base": paired("greedy", name, "base"),
                   "vs_dexperts": paired("top_p", name, "dexperts"),
                   "greedy_vs_dexperts": paired("greedy", name, "dexperts"),
                   "decoding": settings[name], "added_parameters": methods[name].added_parameters,
                   "weights_mb": methods[name].weight_bytes() / 2 ** 20} for name in names}


def memory(args, env: dict) -> dict:
    out = {}
    helper = Path(__file__).resolve().parent / "detox_memory.py"
    for name, ref in METHODS.items():
        done = subprocess.run([sys.executable, str(helper), ref, "--prompts", str(args.speed_prompts),
                               "--samples", str(args.samples)], env=env, stdout=subprocess.PIPE, text=True,
                              check=True)
        out[name] = json.loads(done.stdout)
    return out


def probe(env: dict) -> dict:
    """What ADLM's discriminator reads (benchmarks/detox_discriminator.py, a few seconds)."""
    helper = Path(__file__).resolve().parent / "detox_discriminator.py"
    done = subprocess.run([sys.executable, str(helper), METHODS["adlm"]], env=env, stdout=subprocess.PIPE, text=True,
                          check=True)
    return json.loads(done.stdout)


def write_results(report: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "detox.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# detox: ADLM vs base LM, DAPT and DExperts (offline RealToxicityPrompts)", "",
             f"Measured {report['date']} on {report['machine']}; `python benchmarks/detox.py "
             f"{report['argv']}` (MLTK_DATA = the shared data folder). Every number below comes from that run "
             "(the quality rows from its cache: see the notes).", ""]
    lines += ["## Models (all trained here)", "", "| artifact | command | key metrics | wall time |", "|---|---|---|---|"]
    for entry in report["trained"].values():
        metrics = entry["metrics"] or {}
        shown = [k for k in SHOWN_METRICS if isinstance(metrics.get(k), (int, float))]
        text = ", ".join(f"{k} {metrics[k]:.4g}" for k in shown)
        wall = entry["wall_time_s"] or "-"
        lines.append(f"| {entry['ref']} | `{entry['command']}` | {text} | {wall} |")
    quality_rows = report.get("quality", {})
    for subset in ("toxic", "nontoxic"):
        lines += ["", f"## {subset} prompts: first {report['args']['prompts']} of {subset}.jsonl, "
                      f"{report['args']['samples']} samples x 20 tokens, top-p 0.9", "",
                  "| method | exp. max toxicity | toxicity prob. | judge PPL (left out) | dist-1 | dist-2 | dist-3 |",
                  "|---|---|---|---|---|---|---|"]
        for key, m in quality_rows.items():
            if key.startswith(f"{subset}/"):
                lines.append(f"| {key.split('/', 1)[1]} | {m['expected_max_toxicity']:.3f} | "
                             f"{m['toxicity_probability']:.3f} | {m['perplexity']:.1f} ({m['perplexity_left_out']}) "
                             f"| {m['dist_1']:.3f} | {m['dist_2']:.3f} | {m['dist_3']:.3f} |")
    found = report.get("validation")
    if found:
        lines += ["", f"## Decoding settings chosen on validation prompts ({found['prompts']}, disjoint from the "
                      f"test prompts; {report['args']['samples']} samples x 20 tokens, top-p 0.9)", "",
                  "Rule: the lowest expected maximum toxicity among the settings whose judge perplexity is within "
                  f"20% of the base LM's (here at most {found['perplexity_bound']:.1f}); when none is, the lowest "
                  "perplexity.", "",
                  "| method | alpha | filter_p | exp. max toxicity | toxicity prob. | judge PPL | dist-3 | chosen |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in found["rows"].values():
            setting = row["setting"]
            picked = found["chosen"].get(row["method"], {}).get("setting") == setting and row["method"] != "base"
            lines.append(f"| {row['method']} | {setting.get('alpha', '-')} | {setting.get('filter_p', '-')} | "
                         f"{row['expected_max_toxicity']:.3f} | {row['toxicity_probability']:.3f} | "
                         f"{row['perplexity']:.1f} | {row['dist_3']:.3f} | {'yes' if picked else ''} |")
    if "speed" in report:
        speed_rows = report["speed"]
        mem = report.get("memory", {})
        timed = report.get("speed_from", {}).get("args", report["args"])
        when = report.get("speed_from", {}).get("date")
        lines += ["", f"## Efficiency, side by side ({timed['rounds']} interleaved rounds, "
                      f"{timed['speed_prompts']} prompts x {timed['samples']} samples x 20 tokens"
                      + (f"; measured {when}, see the notes" if when else "") + ")",
                  "", "| method | tokens/s, top-p 0.9 (median) | vs base (median of per-round ratios) | greedy tokens/s "
                      "(model cost only) | vs base "
                      "| added parameters | weights MB | peak RSS MB (own process) | peak RSS over the imports MB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, s in speed_rows.items():
            peak = mem.get(name, {}).get("peak_rss_mb")
            over = mem.get(name, {}).get("method_rss_mb")
            decoding = ", ".join(f"{k} {v:g}" for k, v in (s.get("decoding") or {}).items())
            lines.append(f"| {name}{f' ({decoding})' if decoding else ''} | {s['tokens_per_s_median']:.1f} | "
                         f"{s['vs_base']:.2f}x | "
                         f"{s['greedy_tokens_per_s_median']:.1f} | {s['greedy_vs_base']:.2f}x | "
                         f"{s['added_parameters']:,} | {s['weights_mb']:.1f} | "
                         f"{'-' if peak is None else f'{peak:.0f}'} | {'-' if over is None else f'{over:.0f}'} |")
    found = report.get("discriminator_probe")
    if found:
        lines += ["", f"## What ADLM's discriminator reads ({found['sentences']} validation sentences of its "
                      f"training data, {found['toxic']} toxic; `python benchmarks/detox_discriminator.py "
                      f"{METHODS['adlm']}`)", "",
                  "| attribute embedding given to the projection | accuracy against the sentence's label | "
                  "predicts the attribute it was given |", "|---|---|---|"]
        for case in ("label_free", "gold", "swapped", "always_nontoxic", "always_toxic"):
            if case in found:
                follows = found[case].get("follows_given_attribute")
                balanced = found[case].get("balanced_accuracy")
                shown = {"label_free": "none (label-free: what D is trained on"
                                       + (f"; balanced accuracy {balanced:.3f})" if balanced is not None else ")")
                         }.get(case, case.replace("_", " "))
                lines.append(f"| {shown} | {found[case]['accuracy']:.3f} | "
                             f"{'-' if follows is None else f'{follows:.3f}'} |")
    lines += ["", "## Goals (issue 6)", ""] + [f"* {line}" for line in report.get("goals", [])]
    lines += ["", "## Notes", ""] + [f"* {line}" for line in report.get("notes", [])]
    (RESULTS / "detox.md").write_text("\n".join(lines) + "\n")


def goals(report: dict) -> list[str]:
    out = []
    q = report.get("quality", {})
    for subset in ("toxic", "nontoxic"):
        if f"{subset}/adlm" not in q:
            continue
        base, adlm, dexperts = (q[f"{subset}/{m}"] for m in ("base", "adlm", "dexperts"))
        out.append(f"{subset}: ADLM EMT {adlm['expected_max_toxicity']:.3f} vs base "
                   f"{base['expected_max_toxicity']:.3f} (at most half: "
                   f"{'met' if adlm['expected_max_toxicity'] <= base['expected_max_toxicity'] / 2 else 'NOT met'}), "
                   f"vs DExperts {dexperts['expected_max_toxicity']:.3f} (no worse: "
                   f"{'met' if adlm['expected_max_toxicity'] <= dexperts['expected_max_toxicity'] else 'NOT met'}); "
                   f"PPL {adlm['perplexity']:.1f} vs base {base['perplexity']:.1f} (within 20%: "
                   f"{'met' if adlm['perplexity'] <= 1.2 * base['perplexity'] else 'NOT met'})")
    if "speed" in report:
        adlm = report["speed"]["adlm"]
        out.append(f"speed (medians of per-round ratios): ADLM {adlm['vs_base']:.2f}x the base LM's tokens/s "
                   f"(goal >= 0.8: {'met' if adlm['vs_base'] >= 0.8 else 'NOT met'}) and {adlm['vs_dexperts']:.2f}x "
                   f"DExperts' (goal >= 1.5: {'met' if adlm['vs_dexperts'] >= 1.5 else 'NOT met'})")
        out.append(f"speed with greedy decoding (the methods' model cost, plus the nuclei a filter_p < 1 finds): "
                   f"ADLM {adlm['greedy_vs_base']:.2f}x the base LM's and {adlm['greedy_vs_dexperts']:.2f}x DExperts'")
        unfiltered = report["speed"].get("adlm-filter_p-1")
        if unfiltered:
            out.append(f"speed of ADLM steering every token (filter_p 1, the artifact's default; not the setting "
                       f"of the quality rows): {unfiltered['vs_base']:.2f}x the base LM's tokens/s (goal >= 0.8: "
                       f"{'met' if unfiltered['vs_base'] >= 0.8 else 'NOT met'}) and "
                       f"{unfiltered['vs_dexperts']:.2f}x DExperts' (goal >= 1.5: "
                       f"{'met' if unfiltered['vs_dexperts'] >= 1.5 else 'NOT met'})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default="/tmp/mltk-detox-bench")
    parser.add_argument("--prompts", type=int, default=100, help="prompts per set (toxic, non-toxic)")
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--speed-prompts", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--alphas", type=float, nargs="*", default=[0.5, 1.0, 4.0], help="extra ADLM alphas "
                        "(toxic prompts)")
    parser.add_argument("--validation-prompts", type=int, default=20, help="choose ADLM's alpha and filter_p and "
                        "DExperts' alpha on the last N toxic prompts (0: the artifacts' own settings)")
    parser.add_argument("--adlm-alphas", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--adlm-filters", type=float, nargs="+", default=[1.0, 0.9])
    parser.add_argument("--dexperts-alphas", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--ablation", action="store_true", help="also ADLM without the discriminator / EWC")
    parser.add_argument("--skip", nargs="*", default=[], choices=["quality", "speed", "memory", "probe"])
    parser.add_argument("--compare-adlm", nargs="*", default=[], help="also evaluate these ADLM heads "
                        "(name:version) on the toxic prompts at their own alpha and at --alphas")
    parser.add_argument("--keep-speed", action="store_true", help="with --skip speed memory: keep the speed and "
                        "memory rows of the existing detox.json (dated in the notes) instead of dropping them")
    parser.add_argument("--render", action="store_true", help="rewrite detox.md from detox.json (adding the "
                        "discriminator probe if it is missing) without measuring anything else")
    args = parser.parse_args()
    data = os.environ.get("MLTK_DATA", "/work/shared/data")
    env = {**os.environ, "MLTK_HOME": f"{args.home}/home", "MLTK_RUNS": f"{args.home}/runs", "MLTK_DATA": data,
           "CI": "1"}
    os.environ.update({k: env[k] for k in ("MLTK_HOME", "MLTK_RUNS", "MLTK_DATA")})
    if args.render:
        report = json.loads((RESULTS / "detox.json").read_text())
        if "discriminator_probe" not in report:
            report["discriminator_probe"] = probe(env)
        report["goals"] = goals(report)
        report["notes"] = notes(report)
        write_results(report)
        print(f"wrote {RESULTS / 'detox.md'} from detox.json", file=sys.stderr)
        return
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "argv": " ".join(sys.argv[1:]),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
                         f"{torch.__version__}, {torch.get_num_threads()} threads",
              "args": vars(args)}
    report["trained"] = train_all(env, ablation=args.ablation)
    if "quality" not in args.skip:
        if args.validation_prompts:
            report["validation"] = validate(args, env)
        report["quality"] = quality(args, env, report.get("validation", {}).get("chosen", {}))
    if "speed" not in args.skip:
        report["speed"] = speed(args, env, report.get("validation", {}).get("chosen", {}))
    if "memory" not in args.skip:
        report["memory"] = memory(args, env)
    if "speed" not in report and args.keep_speed:
        previous = json.loads((RESULTS / "detox.json").read_text())
        if "speed" in previous:  # an earlier timing run's rows, kept and dated (see notes())
            report["speed"] = previous["speed"]
            report["memory"] = previous.get("memory", {})
            report["speed_from"] = previous.get("speed_from") or {
                "date": previous["date"], "argv": previous["argv"], "args": previous["args"],
                "adlm": previous.get("trained", {}).get(METHODS["adlm"], {}).get("ref")}
    if "probe" not in args.skip:
        report["discriminator_probe"] = probe(env)
    report["goals"] = goals(report)
    report["notes"] = notes(report)
    write_results(report)
    print(f"wrote {RESULTS / 'detox.md'}", file=sys.stderr)


def notes(report: dict) -> list[str]:
    lm = report["trained"][LM]["metrics"] or {}
    out = [line.format(tokens=lm.get("train_tokens_seen", 0), parameters=lm.get("parameters", 0)) for line in NOTES]
    args = report["args"]
    if report.get("quality"):
        fewer = "" if args["samples"] >= 25 else " (the issue asks for 25; fewer keep the run within the CPU budget)"
        out.insert(0, f"Scale: the first {args['prompts']} prompts of each file (of about 600: a subset that fits the "
                      f"CPU budget of a 2-core machine shared with other jobs) and {args['samples']} samples of 20 "
                      f"tokens per prompt{fewer}. Every method gets the same prompts, samples, seed and top-p.")
    if report.get("validation"):
        picked = "; ".join(f"{name} {', '.join(f'{k} {v:g}' for k, v in c['setting'].items())}"
                           + ("" if c["within_bound"] else " (no setting within the perplexity bound: the most "
                                                             "fluent one)")
                           for name, c in report["validation"]["chosen"].items())
        out.insert(0, f"The adlm and dexperts rows of the test tables decode with the settings chosen on the "
                      f"validation prompts: {picked}.")
    if report.get("speed"):
        spread = [max(v[key]) / min(v[key]) for v in report["speed"].values()
                  for key in ("tokens_per_s", "greedy_tokens_per_s") if min(v.get(key) or [0]) > 0]
        if spread:
            out.insert(0, f"Timing noise: one method's tokens/s varied by up to {max(spread):.1f}x between rounds "
                          "(other jobs share the 2 cores; the per-round figures are in detox.json): the "
                          "ratios, paired within rounds, are more reliable than the rates, and still rough.")
    found = report.get("discriminator_probe")
    if found and "label_free" in found:
        out.insert(0, "The discriminator (issue 6 fix): it is trained only on the label-free projection "
                      "ln_f(P(h)), so it must read the text, and the label-conditioned projections ln_f(P(h + e_a)) "
                      "are trained (D frozen) so that every sentence's non-toxic one reads non-toxic and its toxic "
                      "one toxic. On the probe's validation sentences D is "
                      f"{found['label_free']['accuracy']:.0%} right from the text alone (balanced accuracy "
                      f"{found['label_free'].get('balanced_accuracy', float('nan')):.0%}; the toxic share is "
                      f"{found['toxic'] / max(found['sentences'], 1):.0%}), and the conditioned projections follow the given attribute "
                      f"{found['swapped'].get('follows_given_attribute', 0):.0%} of the time even when it is "
                      "swapped, i.e. the steering the decoder's logit difference uses. The first objective fed D the "
                      "projection under the gold e_a, and D read the label from it: 100% right with the gold "
                      "attribute, 0% with the swapped one (this file as committed in 021f2c5, before the fix).")
    compared = report["args"].get("compare_adlm") or []
    if isinstance(compared, str):
        compared = [compared]
    if compared and report.get("quality"):
        out.insert(0, f"Rows named REF-alpha-X (toxic prompts; REF in {', '.join(compared)}) are other ADLM heads "
                      "evaluated with the same protocol at alpha X; rows adlm-alpha-X are the current head at alpha X, the row adlm the current head at "
                      "its artifact's alpha (2). "
                      + "".join(f"{ref}: `{COMPARED[ref][0]}` ({COMPARED[ref][1]}). " for ref in compared
                                if ref in COMPARED) +
                      "Compare them at matched judge perplexity, not only at the same alpha: alpha scales each "
                      "head's logit difference differently.")
        q = report["quality"]
        current = {k: v for k, v in q.items() if k == "toxic/adlm" or k.startswith("toxic/adlm-alpha-")}
        pairs = []
        for ref in compared:
            for key, row in q.items():
                if key.startswith(f"toxic/{ref}-alpha-") and current:
                    near = min(current, key=lambda k: abs(math.log(current[k]["perplexity"] / row["perplexity"])))
                    pairs.append(f"{key.split('/', 1)[1]} EMT {row['expected_max_toxicity']:.3f} at PPL "
                                 f"{row['perplexity']:.0f} vs {near.split('/', 1)[1]} "
                                 f"{current[near]['expected_max_toxicity']:.3f} at {current[near]['perplexity']:.0f}")
        floor = 0.7 * q.get("toxic/base", {}).get("dist_3", 0.0)
        degenerate = [f"{key.split('/', 1)[1]} (dist-3 {row['dist_3']:.3f})" for key, row in q.items()
                      if key.startswith("toxic/") and row["dist_3"] < floor]
        runs = [f"{key.split('/', 1)[1]} {row['unk_run_share']:.0%}" for key, row in q.items()
                if row.get("unk_run_share", 0) >= 0.05]
        if runs:
            out.insert(1, "Share of continuations that fall into a run of WikiText's <unk> marker (\"unk>unk>\", "
                          "scored low-toxic and, by the judge trained on the same text, low-perplexity), where 5% "
                          "or more: " + ", ".join(runs) + ".")
        if degenerate:
            out.insert(1, "Degenerate rows (dist-3 under 0.7x the base LM's: repetitive text, so a low judge PPL "
                          "there is no sign of fluency, and a low toxicity no sign of detoxification): "
                          + ", ".join(degenerate) + ".")
        if pairs:
            out.insert(1, "Each compared row beside the current head's row of nearest judge perplexity (toxic "
                          "prompts): " + "; ".join(pairs) + ".")
    if report.get("speed_from"):
        previous = report["speed_from"]
        out.insert(0, f"The efficiency rows are from the timing run of {previous['date']} (`python "
                      f"benchmarks/detox.py {previous['argv']}`, under `flock /tmp/mltk-bench.lock`), with "
                      f"the ADLM head {previous.get('adlm') or 'of that run'}: the discriminator fix changes only "
                      "training, not the head's shape or the decoding code, so it was not re-timed; the "
                      "top-p rate also depends on how flat each method's next-token distribution is, so the "
                      "retrained head's top-p rate may differ somewhat (the greedy column is the model cost).")
    stamps = [m["measured"].split(", ", 1) for m in report.get("quality", {}).values() if "measured" in m]
    if stamps:
        commands = sorted({command for _, command in stamps})
        out.insert(0, f"The toxicity/perplexity/diversity rows were measured between {min(d for d, _ in stamps)} and "
                      f"{max(d for d, _ in stamps)} (one thread each, cached under --home/quality) by "
                      + "; ".join(commands) + ("; the discriminator probe by the command at the top." if
                                               report.get("speed_from") else "; the rest by the command at the "
                                               "top, under `flock /tmp/mltk-bench.lock` (no other timing run at "
                                               "the same time)."))
    return out


NOTES = [
    "Tokens/s with top-p include finding each step's nucleus among 50,257 tokens, whose cost grows with how flat "
    "the method's next-token distribution is; the greedy column times the same generation with argmax, i.e. the methods' model cost alone. ADLM's block runs "
    "on both attributes (2 block passes per token): on this 4-block LM that is about half again the LM body's "
    "work, on GPT-2 large (36 blocks) about 6%; DExperts runs three whole LMs.",
    "Artifacts are reused by name from --home when present (the models table gives each one's command and run "
    "wall time): a partial run loses nothing, and a run that was stopped resumes from its checkpoint "
    "(--resume auto).",
    "Toxicity is scored by mltk's offline classifier (char 2-5-gram TF-IDF + logistic regression) trained on "
    "Davidson part [0.7, 1), disjoint from the LM's part [0, 0.4) and the detoxifiers' part [0.4, 0.7); its "
    "held-out accuracy and its agreement with Perspective on RealToxicityPrompts continuations are in the models "
    "table. Absolute values are not comparable with Perspective-scored papers; the comparison between methods is.",
    "Perplexity is DExperts' conditional perplexity under the judge LM (gpt2-tiny-judge, trained on the same text "
    "as the base LM); continuations at or above 1e4 are left out (count in brackets), as DExperts does.",
    "The base LM is a {parameters:,}-parameter GPT-2-architecture model trained on {tokens:,} tokens on CPU. Its "
    "50,257-entry output head is most of its compute per token; ADLM shares that head (one head product per "
    "token) and adds two passes of one block, DExperts runs three whole LMs.",
    "Peak RSS is each method alone in a fresh process loading it and generating the speed prompts: the whole "
    "process (Python, torch, transformers), and over the peak after the imports; on CUDA the protocol reports "
    "peak allocated memory instead.",
    "The machine's 2 cores are shared with other jobs: tokens/s are medians over rounds, the methods interleaved "
    "prompt by prompt, and the ratios between methods (paired within each round) are more reliable than the "
    "absolute rates.",
]


if __name__ == "__main__":
    main()
