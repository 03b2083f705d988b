"""``mltk train lm``: a GPT-2-architecture causal LM from scratch on local text.

The offline stand-in for GPT-2 on a machine with no download: transformers'
``GPT2LMHeadModel`` at a small size, the real GPT-2 tokenizer from a local
folder, trained with next-token cross-entropy on the text sources (every
text followed by end-of-text, packed into rows of ``train.seq_len``). The
artifact is a ``causal-lm``: the ``save_pretrained`` folder (weights as
safetensors, ``config.json``, tokenizer files), so an exported copy loads with
``AutoModelForCausalLM.from_pretrained``.
"""

from __future__ import annotations

import math

import torch

from mltk.core.catalog import register_recipe
from mltk.core.config import config_hash, to_dict
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.seeding import seed_everything
from mltk.data.text.sources import locate
from mltk.data.text.tokens import pack_corpus
from mltk.engines.detox.config import LMConfig
from mltk.engines.detox.training import ObjectiveTask, mean_loss, next_token_loss, read_text_data
from mltk.nn.language_models.causal_lm import causal_lm_artifact, load_tokenizer, quiet_transformers


class LanguageModelObjective(torch.nn.Module):
    """Next-token cross-entropy of a whole (trainable) causal LM."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor):
        loss, _ = self.loss_and_count(ids, mask)
        return loss, {}

    def loss_and_count(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Right padding needs no attention mask: causal attention never looks at later positions.
        logits = self.model(ids, use_cache=False).logits
        return next_token_loss(logits, ids, mask)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)


def build_gpt2(cfg: LMConfig, vocab_size: int, end_of_text: int) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    arch = cfg.model
    config = GPT2Config(vocab_size=vocab_size, n_positions=arch.n_positions, n_embd=arch.n_embd,
                        n_layer=arch.n_layer, n_head=arch.n_head, resid_pdrop=arch.dropout,
                        embd_pdrop=arch.dropout, attn_pdrop=arch.dropout, bos_token_id=end_of_text,
                        eos_token_id=end_of_text)
    return GPT2LMHeadModel(config)


@register_recipe("lm", config=LMConfig, default_preset="tiny-toxic",
                 description="train a GPT-2-architecture causal LM from scratch on local text (offline base LM)")
class LanguageModelRecipe:
    def __init__(self, cfg: LMConfig, ctx: RunContext):
        self.cfg, self.ctx = cfg, ctx

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        quiet_transformers()
        seed_everything(cfg.seed)
        folder = locate(cfg.tokenizer, data_dir=cfg.data.data_dir)
        self.tokenizer = load_tokenizer(folder)
        self.tokenizer_folder = str(folder)
        train, val = read_text_data(cfg.data, seed=cfg.seed, labelled=False, what="lm")
        self.train_data = pack_corpus(self.tokenizer, train, seq_len=cfg.train.seq_len)
        self.val_data = pack_corpus(self.tokenizer, val, seq_len=cfg.train.seq_len) if val else None
        ctx.reporter.info(f"data: {len(train)} texts -> {len(self.train_data)} sequences of {cfg.train.seq_len} "
                          f"tokens ({self.train_data.ids.numel()} tokens); "
                          f"{len(self.val_data) if self.val_data else 0} validation sequences")
        model = build_gpt2(cfg, len(self.tokenizer), self.tokenizer.eos_token_id).to(ctx.device)
        self.objective = LanguageModelObjective(model)
        ctx.reporter.info(f"model: GPT-2 architecture, {cfg.model.n_layer} layers, width {cfg.model.n_embd}, "
                          f"{sum(p.numel() for p in model.parameters())} parameters")
        self.task = ObjectiveTask(ctx, objective=self.objective, data=self.train_data, loop=cfg.train,
                                  optim=cfg.optim, seed=cfg.seed)

    def train(self) -> None:
        self.task.train()

    def evaluate(self) -> dict:
        model = self.objective.model.eval()
        metrics = {"train_tokens_seen": self.cfg.train.steps * self.cfg.train.batch_size * self.cfg.train.seq_len,
                   "parameters": sum(p.numel() for p in model.parameters())}
        if self.val_data is not None and len(self.val_data):
            loss = mean_loss(lambda i, m, _: self.objective.loss_and_count(i, m), self.val_data,
                             batch_size=self.cfg.train.eval_batch_size, device=self.ctx.device)
            metrics.update(val_loss=loss, val_perplexity=math.exp(min(loss, 50.0)))
        return metrics

    def save(self, metrics: dict) -> ArtifactRecord:
        cfg = self.cfg
        parent = "dataset:" + ",".join(cfg.data.all_sources())
        files, card = causal_lm_artifact(
            self.objective.model, self.tokenizer, engine="detox", config=to_dict(cfg),
            config_sha256=config_hash(cfg), metrics=metrics, primary_metric="val_perplexity",
            higher_is_better=False, parent=parent, relation="trained",
            extra={"run_dir": str(self.ctx.run.path), "tokenizer_source": self.tokenizer_folder})
        return self.ctx.registry.save(cfg.artifact_name(), files=files, card=card)
