"""``mltk detox-generate REF --prompt TEXT | --prompts FILE``: continuations from a (detoxified) LM."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from mltk.cli.render import FormatOption, emit, reporter_for
from mltk.core.device import resolve_device
from mltk.core.errors import UsageError
from mltk.data.text.sources import read_prompts
from mltk.engines.detox import Sampling, generate, load_method
from mltk.engines.detox.generation import GenerationStats


def detox_generate(
    ref: str = typer.Argument(..., help="adlm / dexperts / causal-lm artifact, an exported folder, a Hugging Face "
                                        "folder or hf:NAME"),
    prompt: str = typer.Option(None, "--prompt", help="one prompt (streams the continuation on a terminal)"),
    prompts: Path = typer.Option(None, "--prompts", help="prompt file: RealToxicityPrompts JSONL, JSONL with a "
                                                         "prompt field, or one prompt per line (JSONL out)"),
    n: int = typer.Option(1, "-n", "--n", help="continuations per prompt"),
    max_new_tokens: int = typer.Option(20, "--max-new-tokens"),
    alpha: float = typer.Option(None, "--alpha", help="steering strength [default: the artifact's]"),
    seed: int = typer.Option(0, "--seed"),
    method: str = typer.Option(None, "--method", help="base, dapt, dexperts or adlm [default: what REF is]"),
    lm: str = typer.Option(None, "--lm", help="the LM an adlm/dexperts artifact was trained on, if not where its "
                                              "card says"),
    top_p: float = typer.Option(0.9, "--top-p"),
    top_k: int = typer.Option(0, "--top-k", help="0 = off"),
    temperature: float = typer.Option(1.0, "--temperature", help="0 = greedy"),
    filter_p: float = typer.Option(None, "--filter-p", help="DExperts and ADLM: the nucleus of the LM that the "
                                                            "steering re-ranks, 1 = all tokens [default: the "
                                                            "artifact's]"),
    out: Path = typer.Option(None, "--out", "-o", help="write the JSONL records here instead of stdout"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N, mps"),
    fmt: str = FormatOption,
) -> None:
    """Sample continuations; --method base shows the undetoxified LM beside it."""
    reporter = reporter_for(fmt)
    if (prompt is None) == (prompts is None):
        raise UsageError("give exactly one of --prompt TEXT and --prompts FILE")
    if prompt is not None and not prompt.strip():
        raise UsageError("--prompt: empty prompt", hint="give some text to continue")
    records_in = read_prompts(prompts) if prompts is not None else None
    texts = [p.text for p in records_in] if records_in is not None else [prompt]
    sampling = Sampling(max_new_tokens=max_new_tokens, top_p=top_p, top_k=top_k, temperature=temperature).check()
    chosen = load_method(ref, method=method, lm=lm, device=resolve_device(device))
    reporter.info(f"{chosen.name} over {chosen.lm.reference}: {len(texts)} prompt(s) x {n}, "
                  f"{chosen.added_parameters} added parameters")
    stream = prompt is not None and n == 1 and fmt == "human" and sys.stdout.isatty()
    if stream:
        sys.stdout.write(prompt)
        sys.stdout.flush()
    stats = GenerationStats()
    results = generate(lambda: chosen.decoder(alpha=alpha, filter_p=filter_p), chosen.tokenizer, texts, n=n,
                       sampling=sampling, seed=seed, device=resolve_device(device), context=chosen.context,
                       stats=stats, on_token=_write if stream else None)
    if stream:
        sys.stdout.write("\n")
        sys.stdout.flush()
    reporter.info(f"{stats.generated_tokens} tokens in {stats.seconds:.2f} s ({stats.tokens_per_s:.1f} tokens/s)")
    decoding = {**chosen.decoding, **({"alpha": alpha} if alpha is not None else {}),
                **({"filter_p": filter_p} if filter_p is not None else {}), "top_p": top_p,
                "top_k": top_k, "temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed}
    if records_in is not None:
        records = [{"prompt": p.text, **p.meta, "continuations": r.texts} for p, r in zip(records_in, results,
                                                                                           strict=True)]
        lines = [json.dumps(record) for record in records]
        if out is not None:
            out.write_text("".join(line + "\n" for line in lines))
            reporter.info(f"wrote {len(records)} records to {out}")
        data = {"ref": ref, "method": chosen.name, "decoding": decoding, "records": records,
                "tokens_per_s": stats.tokens_per_s}
        emit(fmt, data, lambda console: None if out is not None else _print_lines(lines),
             quiet=None if out is not None else lines)
        return
    continuations = results[0].texts
    data = {"ref": ref, "method": chosen.name, "decoding": decoding, "prompt": prompt,
            "continuations": continuations, "tokens_per_s": stats.tokens_per_s}
    if out is not None:
        out.write_text(json.dumps({"prompt": prompt, "continuations": continuations}) + "\n")
    if stream:
        return

    def human(console):
        for i, text in enumerate(continuations):
            _print_lines([f"{prompt}{text}" if n == 1 else f"[{i + 1}] {prompt}{text}"])

    emit(fmt, data, human, quiet=[t.replace("\n", " ") for t in continuations])


def _write(prompt_index: int, sample: int, text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        sys.stdout.write(line + "\n")
