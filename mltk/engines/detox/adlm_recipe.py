"""``mltk train adlm lm=REF data=...``: train the ADLM head over a frozen LM.

One step, for a batch of sentences with gold attributes a* (0 non-toxic, 1 toxic)::

    h      = LM(ids).hidden_states[-2]            no gradient: the LM is frozen and stays bit-identical
    z      = P(h + e_a*)                          projection block (copy of the last block at step 0)
    u      = ln_f(z);  logits = W u               the LM's frozen final norm and head
    loss   = CE(logits, next tokens)              the sentence under its own attribute
           + lambda_disc * CE(D(pool(u)), a*)     the latent space must tell the attributes apart
           + lambda_ewc * sum_i F_i (theta_i - theta0_i)^2     over P, theta0 = the LM's last block

F is the diagonal Fisher of the LM's last-block weights, estimated from
per-sentence gradients of the LM's own log-likelihood on the training text
and normalised to mean 1. The classes are balanced (the rarer repeated).
The artifact holds only the head (kind ``adlm``, relation ``detoxified``,
parent = the LM reference) plus a fingerprint of the LM it was trained on.
"""

from __future__ import annotations

import math

import torch

from mltk import __version__
from mltk.core.catalog import register_recipe
from mltk.core.config import config_hash, to_dict
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.seeding import generator
from mltk.core.tensor_files import safetensors_bytes
from mltk.engines.detox.adlm import AdlmHead, final_norm_and_head, pooled
from mltk.engines.detox.config import AdlmConfig, AdlmSpec
from mltk.engines.detox.finetune import load_labelled_lm_data
from mltk.engines.detox.training import (
    StepLoop,
    TokenData,
    balance_labels,
    mean_loss,
    next_token_loss,
)
from mltk.nn.causal_lm import lm_fingerprint, resolve_lm_reference

ADLM_KIND = "adlm"
HEAD_FILE = "adlm.safetensors"


class AdlmObjective(torch.nn.Module):
    """The ADLM training loss over a frozen LM; only ``head`` has trainable parameters."""

    def __init__(self, lm: torch.nn.Module, head: AdlmHead, *, spec: AdlmSpec, fisher: dict[str, torch.Tensor]):
        super().__init__()
        self.lm = lm
        for param in self.lm.parameters():
            param.requires_grad_(False)
        self.head = head
        self.spec = spec
        self.anchor_names = sorted(fisher)
        for i, name in enumerate(self.anchor_names):
            self.register_buffer(f"fisher_{i}", fisher[name])
            self.register_buffer(f"anchor_{i}", head.projection.get_parameter(name).detach().clone())

    def train(self, mode: bool = True):
        super().train(mode)
        self.lm.eval()  # frozen: no dropout, whatever mode the head trains in
        return self

    def latent(self, ids: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """u = ln_f(P(h + e_a)) [B, T, d] for each row's attribute."""
        with torch.no_grad():
            hidden = self.lm.base_model(ids, use_cache=False, output_hidden_states=True).hidden_states[-2]
        z, _ = self.head.project(hidden, attributes)
        norm, _ = final_norm_and_head(self.lm)
        return norm(z)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor):
        u = self.latent(ids, labels)
        _, lm_head = final_norm_and_head(self.lm)
        lm_loss, _ = next_token_loss(lm_head(u), ids, mask)
        disc_logits = self.head.discriminator(pooled(u, mask, pool=self.spec.pool))
        disc_loss = torch.nn.functional.cross_entropy(disc_logits, labels)
        ewc = self.ewc_penalty()
        loss = lm_loss + self.spec.lambda_disc * disc_loss + self.spec.lambda_ewc * ewc
        accuracy = (disc_logits.argmax(1) == labels).float().mean()
        return loss, {"lm_loss": lm_loss.detach(), "disc_loss": disc_loss.detach(), "disc_accuracy": accuracy,
                      "ewc": ewc.detach()}

    def ewc_penalty(self) -> torch.Tensor:
        total = torch.zeros((), device=self.head.attribute.device)
        for i, name in enumerate(self.anchor_names):
            theta = self.head.projection.get_parameter(name)
            total = total + (getattr(self, f"fisher_{i}") * (theta - getattr(self, f"anchor_{i}")) ** 2).sum()
        return total

    def attribute_loss_and_count(self, ids, mask, attribute: int):
        attributes = torch.full((ids.shape[0],), attribute, dtype=torch.int64, device=ids.device)
        _, lm_head = final_norm_and_head(self.lm)
        return next_token_loss(lm_head(self.latent(ids, attributes)), ids, mask)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return self.head.state_dict()

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.head.load_state_dict(state)


def diagonal_fisher(lm: torch.nn.Module, head: AdlmHead, data: TokenData, *, sequences: int, seed: int,
                    device: torch.device) -> dict[str, torch.Tensor]:
    """E[(d log p_LM(x) / d theta)^2] of the LM's last-block weights, one sentence per gradient, mean 1.

    The head's projection block is still a copy of the last block, with zero
    attribute embeddings, so its gradients here are the LM's own.
    """
    norm, lm_head = final_norm_and_head(lm)
    params = dict(head.projection.named_parameters())
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    count = min(sequences, len(data))
    order = torch.randperm(len(data), generator=generator(seed, 0xF15E))[:count]
    for index in order.tolist():
        ids = data.ids[index:index + 1].to(device)
        mask = data.mask[index:index + 1].to(device)
        with torch.no_grad():
            hidden = lm.base_model(ids, use_cache=False, output_hidden_states=True).hidden_states[-2]
        z, _ = head.projection(hidden)
        loss, _ = next_token_loss(lm_head(norm(z)), ids, mask)
        grads = torch.autograd.grad(loss, list(params.values()))
        for name, grad in zip(params, grads, strict=True):
            fisher[name] += grad.detach() ** 2 / max(count, 1)
    mean = torch.cat([f.flatten() for f in fisher.values()]).mean().clamp_min(1e-30)
    return {name: f / mean for name, f in fisher.items()}


@register_recipe("adlm", config=AdlmConfig, default_preset="tiny-davidson",
                 description="ADLM: projection block + attribute discriminator over a frozen LM (detoxification)")
class AdlmRecipe:
    def __init__(self, cfg: AdlmConfig, ctx: RunContext):
        self.cfg, self.ctx = cfg, ctx

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        self.loaded, train, self.val = load_labelled_lm_data(cfg, ctx, "adlm")
        lm = self.loaded.model
        self.head = AdlmHead.for_lm(lm).to(ctx.device)
        balanced = balance_labels(train, seed=cfg.seed)
        fisher = diagonal_fisher(lm, self.head, train, sequences=cfg.adlm.fisher_sequences, seed=cfg.seed,
                                 device=ctx.device)
        self.objective = AdlmObjective(lm, self.head, spec=cfg.adlm, fisher=fisher).to(ctx.device)
        ctx.reporter.info(f"adlm: {self.head.added_parameters()} added parameters over a frozen LM of "
                          f"{sum(p.numel() for p in lm.parameters())}; {len(balanced)} balanced training sentences")
        self.loop = StepLoop(ctx, objective=self.objective, data=balanced, loop=cfg.train, optim=cfg.optim,
                             seed=cfg.seed)

    def train(self) -> None:
        self.loop.run()

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.objective.eval()
        metrics = {"added_parameters": self.head.added_parameters()}
        size, device = self.cfg.train.eval_batch_size, self.ctx.device
        for attribute, name in ((0, "nontoxic"), (1, "toxic")):
            rows = self.val.where(self.val.labels == attribute)
            if len(rows):
                loss = mean_loss(lambda i, m, _, a=attribute: self.objective.attribute_loss_and_count(i, m, a),
                                 rows, batch_size=size, device=device)
                metrics[f"val_{name}_perplexity"] = math.exp(min(loss, 50.0))
        if len(self.val):
            correct = 0
            for start in range(0, len(self.val), size):
                batch = self.val.take(torch.arange(start, min(start + size, len(self.val)))).to(device)
                # the discriminator reads the latent of each sentence under its own attribute, as in training
                u = self.objective.latent(batch.ids, batch.labels)
                logits = self.head.discriminator(pooled(u, batch.mask, pool=self.cfg.adlm.pool))
                correct += int((logits.argmax(1) == batch.labels).sum())
            metrics["val_discriminator_accuracy"] = correct / len(self.val)
        return metrics

    def save(self, metrics: dict) -> ArtifactRecord:
        cfg = self.cfg
        parent = resolve_lm_reference(self.loaded.reference)
        meta = {"mltk_version": __version__, "engine": "detox", "parent": parent, "relation": "detoxified",
                "format": "pt"}
        files = {HEAD_FILE: safetensors_bytes(self.head.state_dict(), meta)}
        primary = "val_nontoxic_perplexity" if "val_nontoxic_perplexity" in metrics else "added_parameters"
        card = {"kind": ADLM_KIND, "engine": "detox", "arch": {"arch": "adlm-head", "adlm_head": self.head.spec},
                "lm": {"reference": parent, "fingerprint": lm_fingerprint(self.loaded.model)},
                "decoding": {"alpha": cfg.adlm.alpha, "combine": cfg.adlm.combine},
                "parameters": self.head.added_parameters(), "metrics": metrics,
                "primary_metric": {"name": primary, "higher_is_better": False},
                "lineage": {"parent": parent, "relation": "detoxified"}, "config": to_dict(cfg),
                "config_sha256": config_hash(cfg), "run_dir": str(self.ctx.run.path)}
        return self.ctx.registry.save(cfg.artifact_name(), files=files, card=card)
