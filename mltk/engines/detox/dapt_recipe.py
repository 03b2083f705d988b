"""``mltk train dapt lm=REF``: the DAPT baseline ADLM is measured against (Gururangan et al. 2020).

Domain-adaptive pre-training: the whole LM fine-tuned on the non-toxic
sentences of the labelled data given; the result is a new ``causal-lm``
(relation ``fine-tuned``) that generates like any LM.
"""

from __future__ import annotations

from mltk.core.catalog import register_recipe
from mltk.core.config import config_hash, to_dict
from mltk.core.errors import ConfigError
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.engines.detox.config import DaptConfig
from mltk.engines.detox.lm_recipe import LanguageModelObjective
from mltk.engines.detox.training import (
    ObjectiveTask,
    label_perplexity,
    load_labelled_lm_data,
)
from mltk.nn.language_models.causal_lm import (
    causal_lm_artifact,
    resolve_lm_reference,
)


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
        self.task.train()

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

