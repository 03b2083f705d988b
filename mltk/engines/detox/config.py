"""Configs of the detox recipes: ``lm``, ``adlm``, ``dapt``, ``dexperts`` and ``toxicity-scorer``."""

from __future__ import annotations

import dataclasses
from typing import Literal

from mltk.core.sections import LoopSettings, OptimizerSettings, check_values


@dataclasses.dataclass(frozen=True)
class TextData:
    """Text sources and the seeded part of them a recipe uses.

    ``part: [lo, hi]`` keeps the sentences whose seeded hash falls in
    ``[lo, hi)``: recipes given disjoint parts never share a sentence (the
    presets give the LM, the detoxifiers and the toxicity scorer disjoint parts
    of the same labelled corpus). ``val_fraction`` of what is kept is held out
    for the validation loss.
    """

    name: str = ""  # one source, FORMAT:PATH (``data=FORMAT:PATH`` sets it); more in ``sources``
    sources: list[str] = dataclasses.field(default_factory=list)
    data_dir: str | None = None  # where relative paths are looked up [default: $MLTK_DATA]
    part: list[float] = dataclasses.field(default_factory=lambda: [0.0, 1.0])
    part_seed: int = 0
    val_fraction: float = 0.05
    max_examples: int = 0  # 0 = every example in the part; else a seeded subset of this many

    def all_sources(self) -> list[str]:
        return ([self.name] if self.name else []) + list(self.sources)

    def value_problems(self) -> list[str]:
        problems = check_values(self, {"max_examples": "non-negative"})
        if len(self.part) != 2 or not 0.0 <= self.part[0] < self.part[1] <= 1.0:
            problems.append(f"part: expected [lo, hi] with 0 <= lo < hi <= 1, got {list(self.part)}")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction: expected a fraction in [0, 1), got {self.val_fraction}")
        return problems


@dataclasses.dataclass(frozen=True)
class OptimSpec(OptimizerSettings):
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping

    def value_problems(self) -> list[str]:
        return super().value_problems() + check_values(self, {"warmup_steps": "non-negative"})


@dataclasses.dataclass(frozen=True)
class LoopSpec(LoopSettings):
    steps: int = 1000
    batch_size: int = 16  # sequences per global batch, split evenly over the ranks
    seq_len: int = 64  # tokens per training sequence (sentences are cut to it)
    eval_batch_size: int = 32
    log_every: int = 50  # steps between progress lines and metrics.jsonl records

    def value_problems(self) -> list[str]:
        return super().value_problems() + check_values(
            self, {"steps": "positive", "batch_size": "positive", "seq_len": "positive",
                   "eval_batch_size": "positive", "log_every": "positive"})


@dataclasses.dataclass(frozen=True)
class GPT2Arch:
    """A GPT-2-architecture LM trained from scratch (transformers' GPT2LMHeadModel)."""

    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 128
    dropout: float = 0.0

    def value_problems(self) -> list[str]:
        problems = check_values(self, {"n_layer": "positive", "n_embd": "positive", "n_head": "positive",
                                       "n_positions": "positive", "dropout": "fraction"})
        if self.n_embd > 0 and self.n_head > 0 and self.n_embd % self.n_head:
            problems.append(f"n_embd: {self.n_embd} does not split into n_head={self.n_head} heads")
        return problems


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """``mltk train lm``: a causal LM from scratch on local text, with a local tokenizer folder."""

    name: str = "gpt2-tiny"
    seed: int = 0
    device: str = "auto"
    tokenizer: str = "gpt2_tokenizer"  # folder with tokenizer.json or vocab.json + merges.txt (relative: $MLTK_DATA)
    data: TextData = dataclasses.field(default_factory=TextData)
    model: GPT2Arch = dataclasses.field(default_factory=GPT2Arch)
    optim: OptimSpec = dataclasses.field(default_factory=OptimSpec)
    train: LoopSpec = dataclasses.field(default_factory=lambda: LoopSpec(seq_len=128))

    def artifact_name(self) -> str:
        return self.name

    def value_problems(self) -> list[str]:
        if self.train.seq_len > self.model.n_positions:
            return [f"train.seq_len: {self.train.seq_len} is longer than model.n_positions "
                    f"{self.model.n_positions}; lower train.seq_len or raise model.n_positions"]
        return []


@dataclasses.dataclass(frozen=True)
class AdlmSpec:
    """The ADLM head and its losses (values the paper does not give are our choices; see the engine docs)."""

    lambda_disc: float = 1.0  # weight of the discriminator's cross-entropy on the label-free projection
    lambda_steer: float = 1.0  # weight of the steering term: conditioned projections on their side of D (D frozen)
    lambda_ewc: float = 0.01  # weight of the EWC penalty (diagonal Fisher normalised to mean 1)
    fisher_sequences: int = 64  # sequences of training text whose per-sequence gradients estimate the Fisher
    alpha: float = 2.0  # default steering strength stored with the artifact (detox-generate --alpha overrides)
    combine: Literal["base", "projected"] = "base"  # logits = base + alpha*(nt - t), or nt + alpha*(nt - t)
    filter_p: float = 1.0  # < 1: steer only the base's nucleus of this mass, as DExperts does (a second head product)
    pool: Literal["mean", "last"] = "mean"  # how the discriminator pools the projected states of a sentence

    def value_problems(self) -> list[str]:
        problems = check_values(self, {"lambda_disc": "non-negative", "lambda_steer": "non-negative",
                                       "lambda_ewc": "non-negative", "fisher_sequences": "non-negative",
                                       "alpha": "finite"})
        return problems + nucleus_problems(self.filter_p)


@dataclasses.dataclass(frozen=True)
class AdlmConfig:
    """``mltk train adlm lm=REF``: the projection block, attribute embeddings and discriminator."""

    name: str = ""  # artifact name; empty = adlm-<lm name>
    seed: int = 0
    device: str = "auto"
    lm: str = ""  # the frozen LM: causal-lm artifact, Hugging Face folder, or hf:NAME
    data: TextData = dataclasses.field(default_factory=TextData)
    adlm: AdlmSpec = dataclasses.field(default_factory=AdlmSpec)
    # no weight decay: it would pull the copied block towards zero; EWC holds it near the LM's block instead
    optim: OptimSpec = dataclasses.field(default_factory=lambda: OptimSpec(weight_decay=0.0))
    train: LoopSpec = dataclasses.field(default_factory=lambda: LoopSpec(steps=600))

    def artifact_name(self) -> str:
        return self.name or f"adlm-{_lm_name(self.lm)}"


@dataclasses.dataclass(frozen=True)
class DaptConfig:
    """``mltk train dapt lm=REF``: the whole LM fine-tuned on the non-toxic sentences."""

    name: str = ""
    seed: int = 0
    device: str = "auto"
    lm: str = ""
    data: TextData = dataclasses.field(default_factory=TextData)
    optim: OptimSpec = dataclasses.field(default_factory=lambda: OptimSpec(lr=3e-4))
    train: LoopSpec = dataclasses.field(default_factory=lambda: LoopSpec(steps=600))

    def artifact_name(self) -> str:
        return self.name or f"dapt-{_lm_name(self.lm)}"


@dataclasses.dataclass(frozen=True)
class DExpertsConfig:
    """``mltk train dexperts lm=REF``: an expert (non-toxic) and an anti-expert (toxic), each a copy of the LM."""

    name: str = ""
    seed: int = 0
    device: str = "auto"
    lm: str = ""
    data: TextData = dataclasses.field(default_factory=TextData)
    alpha: float = 2.0  # default steering strength (DExperts' toxicity setting)
    filter_p: float = 0.9  # nucleus of the base LM that the experts re-rank (DExperts' filter_p)
    optim: OptimSpec = dataclasses.field(default_factory=lambda: OptimSpec(lr=3e-4))
    train: LoopSpec = dataclasses.field(default_factory=lambda: LoopSpec(steps=600))

    def artifact_name(self) -> str:
        return self.name or f"dexperts-{_lm_name(self.lm)}"

    def value_problems(self) -> list[str]:
        return check_values(self, {"alpha": "finite"}) + nucleus_problems(self.filter_p)


@dataclasses.dataclass(frozen=True)
class ScorerSpec:
    """Character n-gram TF-IDF features and logistic regression: a model family unlike any LM."""

    ngram_min: int = 2
    ngram_max: int = 5
    features: int = 262144  # hashed feature space (2^18)
    c: float = 4.0  # inverse regularisation strength of the logistic regression
    test_fraction: float = 0.2  # held out of the part for the reported accuracy

    def value_problems(self) -> list[str]:
        problems = check_values(self, {"c": "positive"})
        if not 1 <= self.ngram_min <= self.ngram_max:
            problems.append(f"ngram_min, ngram_max: need 1 <= ngram_min <= ngram_max, got {self.ngram_min}, "
                            f"{self.ngram_max}")
        if self.features < 16:
            problems.append(f"features: must be at least 16, got {self.features}")
        if not 0.0 < self.test_fraction < 1.0:
            problems.append(f"test_fraction: expected a fraction in (0, 1), got {self.test_fraction}")
        return problems


@dataclasses.dataclass(frozen=True)
class ScorerConfig:
    """``mltk train toxicity-scorer``: the offline toxicity classifier the toxicity protocol scores with."""

    name: str = "toxicity-scorer"
    seed: int = 0
    device: str = "cpu"
    data: TextData = dataclasses.field(default_factory=lambda: TextData(val_fraction=0.0))
    model: ScorerSpec = dataclasses.field(default_factory=ScorerSpec)
    extra_test: list[str] = dataclasses.field(default_factory=list)  # more labelled sources, scored out of domain
    reference_rtp: list[str] = dataclasses.field(default_factory=list)  # RTP JSONL: agreement with Perspective

    def artifact_name(self) -> str:
        return self.name


def nucleus_problems(filter_p: float) -> list[str]:
    if not 0.0 < filter_p <= 1.0:  # an empty nucleus would leave no token to sample
        return [f"filter_p: expected a probability mass in (0, 1], got {filter_p}"]
    return []


def _lm_name(ref: str) -> str:
    stem = ref.rstrip("/").split("/")[-1].split(":")[0].split("@")[0] or "lm"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in stem).lstrip(".-") or "lm"
