"""``mltk eval REF --protocol toxicity --prompts FILE --scorer S [--judge LM]``.

The RealToxicityPrompts protocol of DExperts, offline: ``n`` continuations of
``max_new_tokens`` per prompt (nucleus ``top_p``), each scored by a pluggable
toxicity scorer that shares nothing with ADLM's discriminator, then

* ``expected_max_toxicity`` (primary, lower is better) and ``toxicity_probability``;
* ``perplexity``: mean conditional perplexity under a separate judge LM (``--judge``);
* ``dist_1``/``dist_2``/``dist_3`` per prompt, averaged;
* efficiency: generated ``tokens_per_s``, ``peak_memory_mb`` (CUDA: peak
  allocated during generation; CPU: the process's peak resident set, which
  includes everything loaded before it), ``weights_mb`` and ``added_parameters``.

Python users call :func:`toxicity_evaluation` with a loaded method.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
from pathlib import Path

import torch

from mltk.core.catalog import EvalRequest, EvalResult, register_protocol
from mltk.core.console import Reporter
from mltk.core.device import resolve_device
from mltk.core.errors import UsageError
from mltk.core.sections import check_values
from mltk.data.text.sources import Prompt, read_prompts
from mltk.engines.detox.config import nucleus_problems
from mltk.engines.detox.generation import GenerationStats, Sampling, generate
from mltk.engines.detox.methods import DetoxMethod, load_method
from mltk.engines.detox.metrics import (
    conditional_perplexities,
    distinct_n,
    expected_max_toxicity,
    mean_perplexity,
    toxicity_probability,
)
from mltk.engines.detox.scorers import make_scorer
from mltk.nn.language_models.causal_lm import LoadedLM, load_causal_lm


@dataclasses.dataclass(frozen=True)
class ToxicityOptions:
    prompts: str = ""  # prompt file: RealToxicityPrompts JSONL, JSONL with prompt/text, or one prompt per line
    scorer: str = ""  # toxicity-classifier artifact, detoxify[:PATH] or perspective
    judge: str = ""  # LM for perplexity (causal-lm artifact, HF folder, hf:NAME); empty = no perplexity
    method: str = ""  # base, dapt, dexperts or adlm; empty = what the artifact is
    lm: str = ""  # the LM an adlm/dexperts artifact was trained on, if its recorded reference is elsewhere
    n: int = 25
    max_new_tokens: int = 20
    top_p: float = 0.9
    top_k: int = 0
    temperature: float = 1.0
    alpha: float | None = None  # steering strength [default: the artifact's]
    filter_p: float | None = None  # the nucleus DExperts/ADLM steer within [default: the artifact's]
    seed: int = 0
    limit: int = 0  # only the first N prompts; 0 = all
    max_ppl: float = 1e4  # continuations at or above this perplexity are left out of the mean (DExperts)
    perspective_qps: float = 1.0
    out: str = ""  # write each prompt's continuations and scores here (JSONL)

    def value_problems(self) -> list[str]:
        problems = check_values(self, {"n": "positive", "limit": "non-negative", "max_ppl": "positive",
                                       "perspective_qps": "positive", "alpha": "finite"})
        return problems + (nucleus_problems(self.filter_p) if self.filter_p is not None else [])


def toxicity_evaluation(method: DetoxMethod, prompts: list[Prompt], *, scorer, judge: LoadedLM | None,
                        options: ToxicityOptions, device: torch.device,
                        reporter: Reporter | None = None) -> tuple[dict, list[dict]]:
    """(metrics, one record per prompt with its scored continuations)."""
    reporter = reporter or Reporter("quiet")
    sampling = Sampling(max_new_tokens=options.max_new_tokens, top_p=options.top_p, top_k=options.top_k,
                        temperature=options.temperature).check()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stats = GenerationStats()
    with reporter.progress(len(prompts), description="generate") as bar:
        every = max(1, len(prompts) // 10)

        def progress(done: int) -> None:
            bar.update(done)
            if done % every == 0 or done == len(prompts):
                bar.line(f"generated {done}/{len(prompts)} prompts  {stats.tokens_per_s:.1f} tokens/s")

        results = generate(lambda: method.decoder(alpha=options.alpha, filter_p=options.filter_p),
                           method.tokenizer, [p.text for p in prompts], n=options.n, sampling=sampling,
                           seed=options.seed, device=device, context=method.context, stats=stats,
                           on_prompt=progress)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _peak_rss_bytes()) / 2 ** 20
    texts = [r.texts for r in results]
    scores = [scorer.score(row) for row in texts]
    dist = distinct_n(texts)
    metrics = {"expected_max_toxicity": expected_max_toxicity(scores), "toxicity_probability":
               toxicity_probability(scores), "dist_1": dist[0], "dist_2": dist[1], "dist_3": dist[2]}
    perplexities: list[list[float]] = [[] for _ in results]
    if judge is not None:
        context = int(getattr(judge.model.config, "n_positions", 0)
                      or getattr(judge.model.config, "max_position_embeddings", 1024))
        for i, result in enumerate(results):
            perplexities[i] = conditional_perplexities(judge.model, judge.tokenizer, result.prompt, result.texts,
                                                       device=device, max_length=context)
        value, left_out = mean_perplexity([v for row in perplexities for v in row], max_ppl=options.max_ppl)
        metrics.update(perplexity=value, perplexity_left_out=left_out)
    metrics.update(tokens_per_s=stats.tokens_per_s, generated_tokens=stats.generated_tokens,
                   decode_seconds=stats.seconds, peak_memory_mb=peak,
                   weights_mb=method.weight_bytes() / 2 ** 20, added_parameters=method.added_parameters,
                   prompts=len(prompts), samples_per_prompt=options.n)
    records = []
    for i, (prompt, result) in enumerate(zip(prompts, results, strict=True)):
        generations = [{"text": t, "toxicity": s} for t, s in zip(result.texts, scores[i], strict=True)]
        if judge is not None:
            for gen, ppl in zip(generations, perplexities[i], strict=True):
                gen["perplexity"] = ppl
        records.append({"prompt": {"text": prompt.text, "toxicity": prompt.toxicity, "line": prompt.line,
                                   **prompt.meta}, "generations": generations})
    return metrics, records


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # kilobytes on Linux, bytes on macOS


@register_protocol("toxicity", description="RealToxicityPrompts protocol: expected max toxicity, toxicity "
                                           "probability, judge perplexity, dist-n, tokens/s, memory (detox)")
def toxicity_protocol(request: EvalRequest, reporter: Reporter) -> EvalResult:
    options = request.parse_options(ToxicityOptions)
    if not options.prompts:
        raise UsageError("--protocol toxicity needs --prompts FILE",
                         hint="RealToxicityPrompts JSONL, JSONL with a prompt field, or one prompt per line")
    scorer = make_scorer(options.scorer, qps=options.perspective_qps)
    prompts = read_prompts(options.prompts, data_dir=request.data_dir)
    if options.limit:
        prompts = prompts[:options.limit]
    device = resolve_device(request.device)
    method = load_method(request.ref, method=options.method or None, lm=options.lm or None, device=device)
    judge = load_causal_lm(options.judge, device=device) if options.judge else None
    if judge is None:
        reporter.warn("no --judge LM given: perplexity is not measured")
    reporter.info(f"{method.name}: {len(prompts)} prompts x {options.n} samples of {options.max_new_tokens} tokens, "
                  f"top-p {options.top_p}, scorer {getattr(scorer, 'name', options.scorer)}")
    metrics, records = toxicity_evaluation(method, prompts, scorer=scorer, judge=judge, options=options,
                                           device=device, reporter=reporter)
    if options.out:
        out = Path(options.out).expanduser()
        out.write_text("".join(json.dumps(r) + "\n" for r in records))
        reporter.info(f"wrote {len(records)} records to {out}")
    details = {"method": method.name, "lm": method.lm.reference, "prompts_file": options.prompts,
               "scorer": getattr(scorer, "name", options.scorer), "judge": judge.reference if judge else None,
               "scorer_heldout": getattr(scorer, "heldout", None),
               "decoding": {**method.decoding, **({"alpha": options.alpha} if options.alpha is not None else {}),
                            **({"filter_p": options.filter_p} if options.filter_p is not None else {}),
                            "top_p": options.top_p, "top_k": options.top_k, "temperature": options.temperature},
               "seed": options.seed}
    return EvalResult(metrics=metrics, primary="expected_max_toxicity", details=details)
