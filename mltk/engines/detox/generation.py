"""Sampling continuations with a key/value cache, for every method behind one decoder interface.

A decoder turns token ids into next-token logits for a batch of samples::

    logits = decoder.start(prompt_ids)    # [B, T] -> [B, V], fills the caches
    logits = decoder.step(tokens)         # [B]    -> [B, V], one position more

``use_cache=False`` recomputes every position each step instead (the slow
reference the cached path is tested against). The decoders:

* :class:`LMDecoder`: a causal LM as it is (base, DAPT);
* :class:`ContrastDecoder`: DExperts, ``base + alpha * (expert - antiexpert)``
  over the base LM's ``filter_p`` nucleus, three LM forwards per token;
* :class:`AdlmDecoder`: one LM forward and two passes of the projection block
  (both attributes as one batch), combined before the single head product;
  with ``filter_p < 1`` the steering re-ranks only the LM's nucleus, as
  DExperts does (a second head product).

:func:`generate` samples ``n`` continuations per prompt with temperature,
top-k and top-p, from a generator seeded by (seed, prompt index), so the
samples of a prompt do not depend on which other prompts run with it.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import time
from collections.abc import Callable

import torch

from mltk.core.errors import UsageError
from mltk.core.seeding import derive_seed
from mltk.engines.detox.adlm import TOXIC, AdlmHead, combine_states, final_norm_and_head


@dataclasses.dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 20
    top_p: float = 0.9  # nucleus; 1 = off
    top_k: int = 0  # 0 = off
    temperature: float = 1.0  # 0 = greedy

    def check(self) -> Sampling:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            problems.append(f"--top-k must be 0 (off) or positive, got {self.top_k}")
        if self.temperature < 0:
            problems.append(f"--temperature must be 0 (greedy) or positive, got {self.temperature}")
        if problems:
            raise UsageError("; ".join(problems))
        return self


@dataclasses.dataclass
class Continuations:
    prompt: str
    texts: list[str]
    token_ids: list[list[int]]  # each sample's new tokens, up to and including end-of-text


@dataclasses.dataclass
class GenerationStats:
    generated_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------- calling transformers models


class _ModelCall:
    """transformers renamed ``past_key_values`` to ``cache`` (5.x) and ``num_logits_to_keep`` to
    ``logits_to_keep``; this finds the names a model's forward takes, once."""

    def __init__(self, module: torch.nn.Module):
        names = set(inspect.signature(module.forward).parameters)
        self.module = module
        self.cache_key = "cache" if "cache" in names else "past_key_values"
        self.keep_key = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in names), None)

    def __call__(self, ids: torch.Tensor, cache, *, last_logits_only: bool = False, **kwargs):
        fill = kwargs.pop("fill_cache", False)
        args = {self.cache_key: cache, "use_cache": cache is not None or fill, **kwargs}
        if last_logits_only and self.keep_key:
            args[self.keep_key] = 1
        out = self.module(ids, **args)
        return out, out.get(self.cache_key) if args["use_cache"] else None


class Decoder(abc.ABC):
    """Next-token logits for a batch; subclasses implement ``_forward(new_ids, state) -> (logits, state)``."""

    def __init__(self, *, use_cache: bool = True):
        self.use_cache = use_cache
        self.ids: torch.Tensor | None = None
        self.state = None

    def start(self, ids: torch.Tensor) -> torch.Tensor:
        self.ids = ids
        logits, self.state = self._forward(ids, None)
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        if self.use_cache:
            logits, self.state = self._forward(tokens[:, None], self.state)
        else:
            logits, _ = self._forward(self.ids, None)
        return logits

    @abc.abstractmethod
    def _forward(self, ids: torch.Tensor, state):
        """(logits of the last position [B, V], the state to continue from) for ``ids`` after ``state``."""


class LMDecoder(Decoder):
    def __init__(self, model: torch.nn.Module, *, use_cache: bool = True):
        super().__init__(use_cache=use_cache)
        self.call = _ModelCall(model)

    def _forward(self, ids, state):
        out, cache = self.call(ids, state, last_logits_only=True, fill_cache=self.use_cache)
        return out.logits[:, -1].float(), cache


class ContrastDecoder(Decoder):
    """DExperts: the base LM's nucleus (``filter_p``) re-ranked by ``alpha * (expert - antiexpert)``."""

    def __init__(self, base: torch.nn.Module, expert: torch.nn.Module, antiexpert: torch.nn.Module, *,
                 alpha: float, filter_p: float, use_cache: bool = True):
        super().__init__(use_cache=use_cache)
        self.parts = [LMDecoder(m, use_cache=use_cache) for m in (base, expert, antiexpert)]
        self.alpha, self.filter_p = alpha, filter_p

    def _forward(self, ids, state):
        states = state or [None, None, None]
        outputs = [part._forward(ids, s) for part, s in zip(self.parts, states, strict=True)]
        (base, b_state), (expert, e_state), (anti, a_state) = outputs
        logits = top_p_filter(base, self.filter_p) + self.alpha * (expert - anti)
        return logits, [b_state, e_state, a_state]


class AdlmDecoder(Decoder):
    """One frozen-LM forward, then the projection block on both attributes as one batch of 2B rows."""

    def __init__(self, lm: torch.nn.Module, head: AdlmHead, *, alpha: float, combine: str, filter_p: float = 1.0,
                 use_cache: bool = True):
        super().__init__(use_cache=use_cache)
        self.call = _ModelCall(lm.base_model)
        self.norm, self.lm_head = final_norm_and_head(lm)
        self.head, self.alpha, self.combine, self.filter_p = head, alpha, combine, filter_p
        self.layers = lm.config.n_layer

    def _forward(self, ids, state):
        lm_cache, block_cache = state or (None, None)
        out, lm_cache = self.call(ids, lm_cache, output_hidden_states=True, fill_cache=self.use_cache)
        hidden = out.hidden_states
        if len(hidden) != self.layers + 1:
            raise RuntimeError(f"expected {self.layers + 1} hidden states from the LM, got {len(hidden)}")
        batch = ids.shape[0]
        into_last_block = hidden[-2]
        attributes = (torch.arange(2 * batch, device=ids.device) >= batch).long() * TOXIC
        z, block_cache = self.head.project(torch.cat([into_last_block, into_last_block]), attributes, block_cache)
        projected = self.norm(z[:, -1])
        base, nontoxic, toxic = out.last_hidden_state[:, -1], projected[:batch], projected[batch:]
        state = (lm_cache, block_cache if self.use_cache else None)
        if self.filter_p >= 1.0:
            return self.lm_head(combine_states(base, nontoxic, toxic, alpha=self.alpha, combine=self.combine)
                                ).float(), state
        # DExperts-style truncation: the steering re-ranks only the anchor's nucleus (two head products)
        anchor = base if self.combine == "base" else nontoxic
        anchor_logits, steering = self.lm_head(torch.stack([anchor, nontoxic - toxic])).float()
        return top_p_filter(anchor_logits, self.filter_p) + self.alpha * steering, state


# ---------------------------------------------------------------- sampling


def nucleus(logits: torch.Tensor, top_p: float, *, bins: int = 1024,
            span: float = 30.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest set of tokens of probability >= top_p, per row of logits [B, V]: (in_nucleus bool [B, V],
    weights [B, V]: the tokens' probabilities up to a per-row factor, the largest 1).

    A small LM's next-token distribution is flat (its nucleus often holds thousands of the 50,257
    tokens), so sorting the vocabulary, or even the nucleus, costs more per token than the LM on a
    CPU. Instead one pass sums the probability in ``bins`` bins of log-probability below each row's
    top token (``span`` nats wide; whatever lies further below shares the last bin): every bin above
    the one where the running sum reaches ``top_p`` is wholly in the nucleus, every bin below it
    wholly out, and only the tokens of that edge bin (a few dozen) are sorted to find where the
    nucleus ends. The set is the full sort's, up to the rounding of the bins' sums (in the logits' dtype).
    """
    rows = logits.shape[0]
    top = logits.max(dim=-1, keepdim=True).values
    shifted = logits - top  # <= 0, -inf for tokens already filtered out
    weights = shifted.exp()
    which = shifted.mul_(-bins / span).clamp_(max=bins - 1).long()  # bin 0 holds the most likely tokens
    mass = torch.zeros(rows, bins, dtype=weights.dtype, device=logits.device).scatter_add_(1, which, weights)
    mass = mass.to(torch.float64)
    reached = mass.cumsum(dim=-1)
    target = top_p * reached[:, -1:]
    # the first bin whose running sum reaches the target (the last one always does: top_p <= 1)
    edge_bin = (reached >= target).long().argmax(dim=-1, keepdim=True)
    above_edge = reached.gather(1, edge_bin) - mass.gather(1, edge_bin)
    in_edge = which == edge_bin
    values, index = weights.masked_fill(~in_edge, -1.0).topk(int(in_edge.sum(dim=-1).max()), dim=-1)
    chosen = values.to(torch.float64).clamp_min(0.0)
    before = above_edge + chosen.cumsum(dim=-1) - chosen  # probability ranked above each edge token
    keep = (before < target) & (values > 0)  # the top token always stays (before = 0)
    in_nucleus = (which < edge_bin) | torch.zeros_like(in_edge).scatter_(1, index, keep)
    return in_nucleus, weights


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """logits [B, V] with every token outside the smallest set of probability >= top_p set to -inf."""
    if top_p >= 1.0:
        return logits
    in_nucleus, _ = nucleus(logits, top_p)
    return logits.masked_fill(~in_nucleus, float("-inf"))


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = logits.topk(top_k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def sample_next(logits: torch.Tensor, sampling: Sampling, rng: torch.Generator) -> torch.Tensor:
    """One token per row of logits [B, V]: int64 [B]. With top-p the draw is among the nucleus only."""
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    if sampling.temperature != 1.0:
        logits = logits / sampling.temperature
    logits = top_k_filter(logits, sampling.top_k)
    if sampling.top_p >= 1.0:
        weights = (logits - logits.max(dim=-1, keepdim=True).values).exp()
    else:
        in_nucleus, weights = nucleus(logits, sampling.top_p)
        weights = weights.masked_fill_(~in_nucleus, 0.0)
    return draw(weights, rng)


def draw(weights: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """One index per row of non-negative weights [B, V], in proportion to them, by inverting the running sum
    (torch.multinomial normalises and checks the whole row first: several times slower here)."""
    running = weights.cumsum(dim=-1)
    point = torch.rand(weights.shape[0], 1, generator=rng, dtype=weights.dtype).to(weights.device) * running[:, -1:]
    # the first index whose running sum exceeds the point: never a zero-weight one, whose sum equals its left's
    return torch.searchsorted(running, point, right=True).clamp_(max=weights.shape[-1] - 1).flatten()


def encode_prompt(tokenizer, prompt: str, *, room: int, where: str = "prompt") -> list[int]:
    """The prompt's token ids, keeping the last ``room`` if it is longer; an empty prompt is an error."""
    if not prompt.strip():
        raise UsageError(f"{where}: empty prompt", hint="give some text to continue")
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if not ids:
        raise UsageError(f"{where}: the prompt has no tokens", hint="give some text to continue")
    return ids[-room:]


@torch.no_grad()
def generate(decoder_factory: Callable[[], Decoder], tokenizer, prompts: list[str], *, n: int, sampling: Sampling,
             seed: int, device: torch.device, context: int,
             on_token: Callable[[int, int, str], None] | None = None,
             on_prompt: Callable[[int], None] | None = None,
             stats: GenerationStats | None = None) -> list[Continuations]:
    """``n`` continuations of each prompt.

    ``context`` is the LM's longest sequence; prompts are cut from the left
    to leave room for the new tokens. ``on_token(prompt_index, sample, text)``
    receives each sample's new text as it grows (for streaming);
    ``on_prompt(prompts_done)`` is called after each prompt.
    """
    if n < 1:
        raise UsageError(f"-n must be at least 1, got {n}")
    sampling.check()
    end = tokenizer.eos_token_id
    room = context - sampling.max_new_tokens
    if room < 1:
        raise UsageError(f"--max-new-tokens {sampling.max_new_tokens} leaves no room for a prompt in the LM's "
                         f"{context}-token context")
    stats = stats if stats is not None else GenerationStats()
    results = []
    for index, prompt in enumerate(prompts):
        ids = encode_prompt(tokenizer, prompt, room=room, where=f"prompt {index + 1}")
        rng = torch.Generator().manual_seed(derive_seed(seed, index))
        started = time.perf_counter()
        decoder = decoder_factory()
        logits = decoder.start(torch.tensor([ids] * n, dtype=torch.int64, device=device))
        finished = torch.zeros(n, dtype=torch.bool, device=device)
        new_tokens: list[torch.Tensor] = []
        shown = [""] * n
        for position in range(sampling.max_new_tokens):
            token = sample_next(logits, sampling, rng)
            if end is not None:
                token = torch.where(finished, torch.full_like(token, end), token)
            new_tokens.append(token)
            stats.generated_tokens += int((~finished).sum())
            if end is not None:
                finished |= token == end
            if on_token is not None:
                shown = _stream(on_token, index, tokenizer, new_tokens, end, shown)
            if bool(finished.all()) or position == sampling.max_new_tokens - 1:
                break
            logits = decoder.step(token)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stats.seconds += time.perf_counter() - started
        rows = torch.stack(new_tokens, dim=1).tolist()
        kept = [_until_end(row, end) for row in rows]
        texts = [tokenizer.decode([t for t in row if t != end], skip_special_tokens=True) for row in kept]
        results.append(Continuations(prompt, texts, kept))
        if on_prompt is not None:
            on_prompt(index + 1)
    return results


def _until_end(row: list[int], end: int | None) -> list[int]:
    if end is not None and end in row:
        return row[:row.index(end) + 1]
    return row


def _stream(on_token, index: int, tokenizer, new_tokens: list[torch.Tensor], end, shown: list[str]) -> list[str]:
    rows = torch.stack(new_tokens, dim=1).tolist()
    out = []
    for sample, row in enumerate(rows):
        text = tokenizer.decode([t for t in _until_end(row, end) if t != end], skip_special_tokens=True)
        if text != shown[sample] and text.startswith(shown[sample]):
            on_token(index, sample, text[len(shown[sample]):])
        out.append(text if text.startswith(shown[sample]) else shown[sample])
    return out
