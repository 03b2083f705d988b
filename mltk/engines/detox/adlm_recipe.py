"""``mltk train adlm lm=REF data=...``: train the ADLM head over a frozen LM.

One step, for a batch of sentences with gold attributes a* (0 non-toxic, 1 toxic)::

    h      = LM(ids).hidden_states[-2]            no gradient: the LM is frozen and stays bit-identical
    u_free = ln_f(P(h))                           the projection with no attribute embedding: carries no label
    u_a    = ln_f(P(h + e_a))  for a = 0, 1       both label-conditioned projections (P: copy of the last block)
    loss   = CE(W u_a*, next tokens)                          the sentence under its own attribute
           + lambda_disc  * CE(D(pool(u_free)), a*)           D (and P) learn to tell the attributes apart
                                                               from the text alone
           + lambda_steer * mean_a CE(D~(pool(u_a)), a)       every sentence's non-toxic projection must read
                                                               as non-toxic to D, its toxic one as toxic
           + lambda_ewc   * sum_i F_i (theta_i - theta0_i)^2  over P, theta0 = the LM's last block

D~ is the discriminator with its weights detached: the steering term moves
only P and the attribute embeddings, never D. So D is trained only on
projections that do not carry the label and cannot solve its loss by reading
e_a (the first version fed D the projection under the gold e_a, and it did
exactly that: 100% right with the gold label, 0% with the swapped one,
leaving the latent space untouched). This split (a label-free discriminator
plus a steering term on the label-conditioned projections, D frozen there) is
our interpretation: the paper's method section could not be read, its code is
not public. It makes the projected space attribute-discriminative twice over:
P must make the text's attribute readable in u_free, and e_0 / e_1 must move
any sentence's projection to D's non-toxic / toxic side, which is the
direction the decoder's logit difference W(u_0 - u_1) follows.

F is the diagonal Fisher of the LM's last-block weights, estimated from
per-sentence gradients of the LM's own log-likelihood on the training text
and normalised to mean 1. The classes are balanced (the rarer repeated).
The artifact holds only the head (kind ``adlm``, relation ``detoxified``,
parent = the LM reference) plus a fingerprint of the LM it was trained on.
"""

from __future__ import annotations

import math

import torch

from mltk.core.artifact import build_card, provenance
from mltk.core.catalog import register_recipe
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.seeding import generator
from mltk.core.tensor_files import safetensors_bytes
from mltk.data.text.tokens import TokenData, balance_labels
from mltk.engines.detox.adlm import NONTOXIC, TOXIC, AdlmHead, final_norm_and_head, pooled
from mltk.engines.detox.config import AdlmConfig, AdlmSpec
from mltk.engines.detox.training import (
    ObjectiveTask,
    load_labelled_lm_data,
    mean_loss,
    next_token_loss,
)
from mltk.nn.language_models.causal_lm import lm_fingerprint, resolve_lm_reference

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

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """The frozen LM's input to its last block [B, T, d] (no gradient)."""
        with torch.no_grad():
            return self.lm.base_model(ids, use_cache=False, output_hidden_states=True).hidden_states[-2]

    def latent(self, ids: torch.Tensor, attributes: torch.Tensor | None) -> torch.Tensor:
        """u = ln_f(P(h + e_a)) [B, T, d] for each row's attribute; attributes None: u_free = ln_f(P(h))."""
        hidden = self.hidden(ids)
        if attributes is None:
            z, _ = self.head.projection(hidden)
        else:
            z, _ = self.head.project(hidden, attributes)
        norm, _ = final_norm_and_head(self.lm)
        return norm(z)

    def discriminate(self, u: torch.Tensor, mask: torch.Tensor, *, frozen: bool = False) -> torch.Tensor:
        """D's logits [B, 2] for pooled latents; frozen: with D's weights detached (no gradient reaches D)."""
        pooled_u = pooled(u, mask, pool=self.spec.pool)
        disc = self.head.discriminator
        if frozen:
            return torch.nn.functional.linear(pooled_u, disc.weight.detach(), disc.bias.detach())
        return disc(pooled_u)

    def losses(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term of the loss (see the module docstring), unweighted, plus D's accuracy on u_free."""
        batch = ids.shape[0]
        hidden = self.hidden(ids)
        embeddings = self.head.attribute
        # one pass of P over 3B rows: label-free, non-toxic-conditioned, toxic-conditioned
        stacked = torch.cat([hidden, hidden + embeddings[NONTOXIC], hidden + embeddings[TOXIC]])
        z, _ = self.head.projection(stacked)
        norm, lm_head = final_norm_and_head(self.lm)
        u_free, u_nontoxic, u_toxic = norm(z).split(batch)
        u_gold = torch.where(labels[:, None, None] == TOXIC, u_toxic, u_nontoxic)
        lm_loss, _ = next_token_loss(lm_head(u_gold), ids, mask)
        disc_logits = self.discriminate(u_free, mask)
        disc_loss = torch.nn.functional.cross_entropy(disc_logits, labels)
        both_masks = torch.cat([mask, mask])
        steer_logits = self.discriminate(torch.cat([u_nontoxic, u_toxic]), both_masks, frozen=True)
        targets = torch.cat([torch.full_like(labels, NONTOXIC), torch.full_like(labels, TOXIC)])
        steer_loss = torch.nn.functional.cross_entropy(steer_logits, targets)
        return {"lm_loss": lm_loss, "disc_loss": disc_loss, "steer_loss": steer_loss, "ewc": self.ewc_penalty(),
                "disc_accuracy": (disc_logits.argmax(1) == labels).float().mean().detach(),
                "steer_accuracy": (steer_logits.argmax(1) == targets).float().mean().detach()}

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor):
        parts = self.losses(ids, mask, labels)
        spec = self.spec
        loss = (parts["lm_loss"] + spec.lambda_disc * parts["disc_loss"] + spec.lambda_steer * parts["steer_loss"]
                + spec.lambda_ewc * parts["ewc"])
        return loss, {k: v.detach() for k, v in parts.items()}

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
        self.task = ObjectiveTask(ctx, objective=self.objective, data=balanced, loop=cfg.train, optim=cfg.optim,
                                  seed=cfg.seed)

    def train(self) -> None:
        self.task.train()

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
            correct = steered = 0
            for start in range(0, len(self.val), size):
                batch = self.val.take(torch.arange(start, min(start + size, len(self.val)))).to(device)
                # D reads the label-free projection, as in training: the text alone
                logits = self.objective.discriminate(self.objective.latent(batch.ids, None), batch.mask)
                correct += int((logits.argmax(1) == batch.labels).sum())
                for attribute in (NONTOXIC, TOXIC):  # does each conditioned projection land on its side of D?
                    given = torch.full_like(batch.labels, attribute)
                    logits = self.objective.discriminate(self.objective.latent(batch.ids, given), batch.mask)
                    steered += int((logits.argmax(1) == attribute).sum())
            metrics["val_discriminator_accuracy"] = correct / len(self.val)
            metrics["val_steer_accuracy"] = steered / (2 * len(self.val))
        return metrics

    def save(self, metrics: dict) -> ArtifactRecord:
        cfg = self.cfg
        parent = resolve_lm_reference(self.loaded.reference)
        meta = provenance(engine="detox", parent=parent, relation="detoxified", format="pt")
        files = {HEAD_FILE: safetensors_bytes(self.head.state_dict(), meta)}
        primary = "val_nontoxic_perplexity" if "val_nontoxic_perplexity" in metrics else "added_parameters"
        card = build_card(kind=ADLM_KIND, engine="detox", arch={"arch": "adlm-head", "adlm_head": self.head.spec},
                          lm={"reference": parent, "fingerprint": lm_fingerprint(self.loaded.model)},
                          decoding={"alpha": cfg.adlm.alpha, "combine": cfg.adlm.combine,
                                    "filter_p": cfg.adlm.filter_p},
                          parameters=self.head.added_parameters(), metrics=metrics, primary_metric=primary,
                          higher_is_better=False, parent=parent, relation="detoxified", config=cfg,
                          run_dir=str(self.ctx.run.path))
        return self.ctx.registry.save(cfg.artifact_name(), files=files, card=card)
