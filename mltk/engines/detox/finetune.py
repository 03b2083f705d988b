"""The baselines ADLM is measured against: ``dapt`` and ``dexperts`` (Gururangan et al. 2020; Liu et al. 2021).

* ``mltk train dapt lm=REF``: domain-adaptive pre-training, the whole LM
  fine-tuned on the non-toxic sentences; the result is a new ``causal-lm``
  (relation ``fine-tuned``) that generates like any LM.
* ``mltk train dexperts lm=REF``: an expert (fine-tuned on non-toxic text) and
  an anti-expert (on toxic text), both copies of the LM; at decoding
  ``logits = base + alpha * (expert - antiexpert)`` over the base LM's
  nucleus (``filter_p``), as DExperts does. The artifact stores the two
  experts (kind ``dexperts``); the base LM is its parent.

Both train on the labelled part of the data given; dexperts sees the two
labels in equal numbers (the rarer repeated), each expert its own rows of a
batch.
"""

from __future__ import annotations

import copy
import math

import torch

from mltk.core.artifact import build_card, provenance
from mltk.core.catalog import register_recipe
from mltk.core.config import config_hash, to_dict
from mltk.core.errors import ConfigError
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.seeding import seed_everything
from mltk.core.tensor_files import safetensors_bytes
from mltk.engines.detox.config import DaptConfig, DExpertsConfig
from mltk.engines.detox.lm_recipe import LanguageModelObjective
from mltk.engines.detox.training import (
    ObjectiveTask,
    TokenData,
    balance_labels,
    encode_sentences,
    mean_loss,
    read_text_data,
)
from mltk.nn.causal_lm import (
    causal_lm_artifact,
    lm_fingerprint,
    load_causal_lm,
    resolve_lm_reference,
)

DEXPERTS_KIND = "dexperts"
EXPERT_FILE = "expert.safetensors"
ANTIEXPERT_FILE = "antiexpert.safetensors"


def load_labelled_lm_data(cfg, ctx: RunContext, what: str):
    """(loaded LM, train TokenData, val TokenData) for a recipe with ``lm`` and labelled ``data``."""
    if not cfg.lm:
        raise ConfigError(["lm: required: the LM to start from"], source=what,
                          hint="lm=NAME (a causal-lm artifact, e.g. from `mltk train lm`), a Hugging Face folder, "
                               "or hf:NAME")
    seed_everything(cfg.seed)
    loaded = load_causal_lm(cfg.lm, registry=ctx.registry, device=ctx.device)
    train, val = read_text_data(cfg.data, seed=cfg.seed, labelled=True, what=what)
    limit = loaded.model.config.max_position_embeddings if hasattr(loaded.model.config, "max_position_embeddings") \
        else cfg.train.seq_len
    seq_len = min(cfg.train.seq_len, limit)
    train_data = encode_sentences(loaded.tokenizer, train, seq_len=seq_len)
    val_data = encode_sentences(loaded.tokenizer, val, seq_len=seq_len)
    toxic = int((train_data.labels == 1).sum())
    ctx.reporter.info(f"data: {len(train)} training sentences ({toxic} toxic, {len(train) - toxic} non-toxic), "
                      f"{len(val)} validation; LM {loaded.reference} "
                      f"({sum(p.numel() for p in loaded.model.parameters())} parameters)")
    return loaded, train_data, val_data


def label_perplexity(loss_and_count, data: TokenData, label: int, *, batch_size: int, device) -> float | None:
    rows = data.where(data.labels == label)
    if len(rows) == 0:
        return None
    loss = mean_loss(lambda i, m, _: loss_and_count(i, m), rows, batch_size=batch_size, device=device)
    return math.exp(min(loss, 50.0))


# ---------------------------------------------------------------- DAPT


@register_recipe("dapt", config=DaptConfig, default_preset="tiny-davidson",
                 description="baseline: fine-tune the whole LM on non-toxic text (DAPT)")
class DaptRecipe:
    def __init__(self, cfg: DaptConfig, ctx: RunContext):
        self.cfg, self.ctx = cfg, ctx

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        self.loaded, train, self.val = load_labelled_lm_data(cfg, ctx, "dapt")
        nontoxic = train.where(train.labels == 0)
        if len(nontoxic) == 0:
            raise ConfigError(["data: no non-toxic sentences to adapt to"], source="dapt")
        self.objective = LanguageModelObjective(self.loaded.model)
        self.task = ObjectiveTask(ctx, objective=self.objective, data=nontoxic, loop=cfg.train, optim=cfg.optim,
                                  seed=cfg.seed)

    def train(self) -> None:
        self.task.run()

    def evaluate(self) -> dict:
        self.objective.eval()
        common = {"batch_size": self.cfg.train.eval_batch_size, "device": self.ctx.device}
        metrics = {"val_nontoxic_perplexity": label_perplexity(self.objective.loss_and_count, self.val, 0, **common),
                   "val_toxic_perplexity": label_perplexity(self.objective.loss_and_count, self.val, 1, **common)}
        return {k: v for k, v in metrics.items() if v is not None}

    def save(self, metrics: dict) -> ArtifactRecord:
        cfg = self.cfg
        files, card = causal_lm_artifact(
            self.loaded.model, self.loaded.tokenizer, engine="detox", config=to_dict(cfg),
            config_sha256=config_hash(cfg), metrics=metrics, primary_metric="val_nontoxic_perplexity",
            higher_is_better=False, parent=resolve_lm_reference(self.loaded.reference), relation="fine-tuned",
            extra={"detox": {"method": "dapt"}, "run_dir": str(self.ctx.run.path)})
        return self.ctx.registry.save(cfg.artifact_name(), files=files, card=card)


# ---------------------------------------------------------------- DExperts


class ExpertPairObjective(torch.nn.Module):
    """Each expert's next-token loss on its own rows of the batch (label 0: expert, 1: anti-expert)."""

    def __init__(self, base: torch.nn.Module):
        super().__init__()
        self.expert = LanguageModelObjective(copy.deepcopy(base))
        self.antiexpert = LanguageModelObjective(copy.deepcopy(base))
        for param in self.parameters():
            param.requires_grad_(True)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor):
        losses = {}
        for name, module, label in (("expert_loss", self.expert, 0), ("antiexpert_loss", self.antiexpert, 1)):
            rows = labels == label
            if rows.any():
                losses[name], _ = module.loss_and_count(ids[rows], mask[rows])
            else:  # a batch without this label: a zero loss that still reaches every weight (DDP needs it)
                losses[name] = module.loss_and_count(ids[:1], mask[:1])[0] * 0.0
        return losses["expert_loss"] + losses["antiexpert_loss"], {k: v.detach() for k, v in losses.items()}

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {**{f"expert.{k}": v for k, v in self.expert.model.state_dict().items()},
                **{f"antiexpert.{k}": v for k, v in self.antiexpert.model.state_dict().items()}}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        for prefix, module in (("expert.", self.expert.model), ("antiexpert.", self.antiexpert.model)):
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


@register_recipe("dexperts", config=DExpertsConfig, default_preset="tiny-davidson",
                 description="baseline: expert and anti-expert LMs whose logit difference steers the base (DExperts)")
class DExpertsRecipe:
    def __init__(self, cfg: DExpertsConfig, ctx: RunContext):
        self.cfg, self.ctx = cfg, ctx

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        self.loaded, train, self.val = load_labelled_lm_data(cfg, ctx, "dexperts")
        self.objective = ExpertPairObjective(self.loaded.model).to(ctx.device)
        self.task = ObjectiveTask(ctx, objective=self.objective, data=balance_labels(train, seed=cfg.seed),
                                  loop=cfg.train, optim=cfg.optim, seed=cfg.seed)

    def train(self) -> None:
        self.task.run()

    def evaluate(self) -> dict:
        self.objective.eval()
        common = {"batch_size": self.cfg.train.eval_batch_size, "device": self.ctx.device}
        metrics = {
            "val_expert_nontoxic_perplexity": label_perplexity(self.objective.expert.loss_and_count, self.val, 0,
                                                               **common),
            "val_antiexpert_toxic_perplexity": label_perplexity(self.objective.antiexpert.loss_and_count, self.val,
                                                                1, **common),
            "added_parameters": sum(p.numel() for p in self.objective.parameters())}
        return {k: v for k, v in metrics.items() if v is not None}

    def save(self, metrics: dict) -> ArtifactRecord:
        cfg = self.cfg
        parent = resolve_lm_reference(self.loaded.reference)
        meta = provenance(engine="detox", parent=parent, relation="detoxified", format="pt")
        files = {EXPERT_FILE: safetensors_bytes(self.objective.expert.model.state_dict(), meta),
                 ANTIEXPERT_FILE: safetensors_bytes(self.objective.antiexpert.model.state_dict(), meta)}
        card = build_card(kind=DEXPERTS_KIND, engine="detox",
                          lm={"reference": parent, "fingerprint": lm_fingerprint(self.loaded.model)},
                          decoding={"alpha": cfg.alpha, "filter_p": cfg.filter_p},
                          parameters=metrics.get("added_parameters"), metrics=metrics,
                          primary_metric="val_expert_nontoxic_perplexity", higher_is_better=False, parent=parent,
                          relation="detoxified", config=cfg, run_dir=str(self.ctx.run.path))
        return self.ctx.registry.save(cfg.artifact_name(), files=files, card=card)
