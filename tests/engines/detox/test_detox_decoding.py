"""The defining properties of the ADLM head and of every decoder, on a tiny random GPT-2."""

from __future__ import annotations

import copy

import pytest
import torch

from mltk.data.text.sources import TextExample
from mltk.data.text.tokens import encode_sentences
from mltk.engines.detox.adlm import AdlmHead
from mltk.engines.detox.adlm_recipe import AdlmObjective, diagonal_fisher
from mltk.engines.detox.config import AdlmSpec
from mltk.engines.detox.generation import (
    AdlmDecoder,
    ContrastDecoder,
    LMDecoder,
    Sampling,
    generate,
    sample_next,
    top_k_filter,
    top_p_filter,
)
from mltk.nn.language_models.causal_lm import load_causal_lm

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def lm(detox_files):
    return load_causal_lm(str(detox_files["lm"]))


def trained_like(head: AdlmHead, seed: int = 1) -> AdlmHead:
    """The head with every weight moved, as training would move it."""
    moved = copy.deepcopy(head)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in moved.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return moved


def prompt_ids(lm, text="you are a", n=3):
    return torch.tensor([lm.tokenizer(text)["input_ids"]] * n)


def test_fresh_head_reproduces_the_lm_for_both_attributes(lm):
    """P is a copy of the last block and e_a start at zero: both attribute logits equal the LM's, for any alpha."""
    head = AdlmHead.for_lm(lm.model)
    ids = prompt_ids(lm)
    base = LMDecoder(lm.model).start(ids)
    for combine in ("base", "projected"):
        steered = AdlmDecoder(lm.model, head, alpha=5.0, combine=combine).start(ids)
        torch.testing.assert_close(steered, base, atol=1e-4, rtol=1e-4)


def test_alpha_zero_gives_the_base_lm_logits_after_training(lm):
    head = trained_like(AdlmHead.for_lm(lm.model))
    ids = prompt_ids(lm)
    base_decoder, adlm_decoder = LMDecoder(lm.model), AdlmDecoder(lm.model, head, alpha=0.0, combine="base")
    torch.testing.assert_close(adlm_decoder.start(ids), base_decoder.start(ids), atol=1e-5, rtol=1e-5)
    token = torch.tensor([5, 6, 7])
    torch.testing.assert_close(adlm_decoder.step(token), base_decoder.step(token), atol=1e-5, rtol=1e-5)
    steered = AdlmDecoder(lm.model, head, alpha=2.0, combine="base").start(ids)
    assert (steered - base_decoder.start(ids)).abs().max() > 1e-2  # and alpha > 0 does steer


@pytest.mark.parametrize("combine", ["base", "projected"])
def test_combining_states_before_the_head_equals_combining_logits(lm, combine):
    """One head product of the combined state = the logit rule written out with three head products."""
    head = trained_like(AdlmHead.for_lm(lm.model))
    ids, alpha = prompt_ids(lm), 1.5
    got = AdlmDecoder(lm.model, head, alpha=alpha, combine=combine).start(ids)
    with torch.no_grad():
        out = lm.model.base_model(ids, output_hidden_states=True)
        hidden = out.hidden_states[-2]
        norm, lm_head = lm.model.base_model.ln_f, lm.model.get_output_embeddings()
        logit = {a: lm_head(norm(head.project(hidden, torch.full((3,), a))[0][:, -1])) for a in (0, 1)}
        base = lm_head(out.last_hidden_state[:, -1])
    anchor = base if combine == "base" else logit[0]
    torch.testing.assert_close(got, anchor + alpha * (logit[0] - logit[1]), atol=1e-4, rtol=1e-4)
    # with filter_p the steering re-ranks only the anchor's nucleus, as DExperts does
    filtered = AdlmDecoder(lm.model, head, alpha=alpha, combine=combine, filter_p=0.5).start(ids)
    kept = torch.isfinite(top_p_filter(anchor, 0.5))
    assert torch.equal(torch.isfinite(filtered), kept) and not bool(kept.all())
    torch.testing.assert_close(filtered[kept], (anchor + alpha * (logit[0] - logit[1]))[kept], atol=1e-4, rtol=1e-4)


def decoders(lm):
    head = trained_like(AdlmHead.for_lm(lm.model))
    expert, anti = trained_like(lm.model, 2), trained_like(lm.model, 3)
    return {"base": lambda cache: LMDecoder(lm.model, use_cache=cache),
            "adlm": lambda cache: AdlmDecoder(lm.model, head, alpha=2.0, combine="base", use_cache=cache),
            "dexperts": lambda cache: ContrastDecoder(lm.model, expert, anti, alpha=2.0, filter_p=0.9,
                                                      use_cache=cache)}


@pytest.mark.parametrize("method", ["base", "adlm", "dexperts"])
def test_kv_cache_gives_the_same_tokens_as_recomputing(lm, method):
    make = decoders(lm)[method]
    sampling = Sampling(max_new_tokens=10, top_p=0.9, top_k=50, temperature=1.0)
    runs = [generate(lambda c=cache: make(c), lm.tokenizer, ["you are a", "the cat sat on"], n=4,
                     sampling=sampling, seed=3, device=CPU, context=64) for cache in (True, False)]
    assert [r.token_ids for r in runs[0]] == [r.token_ids for r in runs[1]]
    assert sum(len(t) for r in runs[0] for t in r.token_ids) > 8 * 3  # it really generated


def test_samples_of_a_prompt_do_not_depend_on_the_other_prompts(lm):
    make = decoders(lm)["base"]
    sampling = Sampling(max_new_tokens=6)
    alone = generate(lambda: make(True), lm.tokenizer, ["you are a"], n=3, sampling=sampling, seed=9, device=CPU,
                     context=64)
    together = generate(lambda: make(True), lm.tokenizer, ["you are a", "the cat"], n=3, sampling=sampling, seed=9,
                        device=CPU, context=64)
    assert alone[0].token_ids == together[0].token_ids


def test_top_p_keeps_the_smallest_nucleus_and_top_k_the_k_best():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(top_p_filter(logits, 0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(top_p_filter(logits, 0.1)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(top_k_filter(logits, 2)).tolist() == [[True, True, False, False]]


def _full_sort_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """The reference nucleus: sort the whole vocabulary (probabilities up to a factor, so that a uniform row's
    sums are exact integers)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    weights = (sorted_logits - sorted_logits[:, :1]).exp()
    drop_sorted = weights.cumsum(dim=-1) - weights >= top_p * weights.sum(dim=-1, keepdim=True)
    return logits.masked_fill(torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted), float("-inf"))


@pytest.mark.parametrize("scale", [8.0, 2.0, 0.5, 0.0])  # from peaked (nucleus in the first 256) to uniform
def test_the_candidate_nucleus_equals_the_full_sort(scale):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5000, generator=generator, dtype=torch.float64) * scale
    masked = logits.masked_fill(torch.rand(logits.shape, generator=generator) < 0.7, float("-inf"))  # DExperts' input
    for top_p in (0.5, 0.9, 0.99):
        for given in (logits, masked):
            ours, reference = torch.isfinite(top_p_filter(given, top_p)), torch.isfinite(_full_sort_top_p(given, top_p))
            assert torch.equal(ours.sum(-1), reference.sum(-1))
            if scale > 0:  # (all logits equal: which of the tied tokens are kept is arbitrary in both)
                assert torch.equal(ours, reference)


def test_top_p_sampling_draws_only_from_the_nucleus_in_proportion():
    probs = torch.tensor([0.4, 0.3, 0.2, 0.06, 0.04] + [0.0] * 300)
    logits = torch.log(probs).repeat(4000, 1)
    rng = torch.Generator().manual_seed(0)
    tokens = sample_next(logits, Sampling(top_p=0.85), rng)
    counts = torch.bincount(tokens, minlength=5)[:5].double() / len(tokens)
    assert int(tokens.max()) <= 2  # 0.4 + 0.3 < 0.85 <= 0.4 + 0.3 + 0.2: three tokens
    assert counts[:3].tolist() == pytest.approx([4 / 9, 3 / 9, 2 / 9], abs=0.03)


def test_fisher_is_normalised_and_ewc_is_zero_until_the_block_moves(lm):
    head = AdlmHead.for_lm(lm.model)
    examples = [TextExample("you are a stupid idiot", 1), TextExample("the cat sat on the mat", 0)] * 3
    data = encode_sentences(lm.tokenizer, examples, seq_len=16)
    fisher = diagonal_fisher(lm.model, head, data, sequences=4, seed=0, device=CPU)
    flat = torch.cat([f.flatten() for f in fisher.values()])
    assert flat.min() >= 0 and abs(float(flat.mean()) - 1.0) < 1e-4
    objective = AdlmObjective(lm.model, head, spec=AdlmSpec(), fisher=fisher)
    assert float(objective.ewc_penalty().detach()) == 0.0
    with torch.no_grad():
        head.projection.fc_in.weight.add_(0.01)
    assert float(objective.ewc_penalty().detach()) > 0.0
