"""``mltk train dexperts lm=REF``: the DExperts baseline ADLM is measured against (Liu et al. 2021).

An expert (fine-tuned on non-toxic text) and an anti-expert (on toxic text),
both copies of the LM; at decoding ``logits = base + alpha * (expert -
antiexpert)`` over the base LM's nucleus (``filter_p``), as DExperts does. The
artifact stores the two experts (kind ``dexperts``); the base LM is its
parent. The two labels are seen in equal numbers (the rarer repeated), each
expert its own rows of a batch.
"""

from __future__ import annotations

import copy

import torch

from mltk.core.artifact import build_card, provenance
from mltk.core.catalog import register_recipe
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.tensor_files import safetensors_bytes
from mltk.data.text.tokens import balance_labels
from mltk.engines.detox.config import DExpertsConfig
from mltk.engines.detox.lm_recipe import LanguageModelObjective
from mltk.engines.detox.training import ObjectiveTask, label_perplexity, load_labelled_lm_data
from mltk.nn.language_models.causal_lm import (
    lm_fingerprint,
    resolve_lm_reference,
)

DEXPERTS_KIND = "dexperts"
EXPERT_FILE = "expert.safetensors"
ANTIEXPERT_FILE = "antiexpert.safetensors"


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
        self.task.train()

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
