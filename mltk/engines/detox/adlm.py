"""The ADLM head: a projection block with attribute embeddings, and an attribute discriminator.

ADLM (Kwak, Kim and Hwang, ACL 2023, arXiv 2210.10329) keeps the LM frozen
and learns a projection of its latent space in which toxic and non-toxic text
separate. Our formulation (the paper's method section could not be read; see
the engine docstring for what is interpretation)::

    h        = input of the LM's last block, [B, T, d]          (frozen LM, one forward)
    z_a      = P(h + e_a)                                        a in {0 non-toxic, 1 toxic}
    u_a      = ln_f(z_a);  logits_a = W u_a                      (the LM's own final norm and head, frozen)
    D(u)     = linear attribute classifier on pooled latents, trained on the label-free u = ln_f(P(h))
               (so it reads the text, never e_a); u_a is trained to land on a's side of D (D frozen there):
               see adlm_recipe.py for the objective and which part of it is our interpretation

P is one GPT-2 transformer block initialised as a copy of the LM's last block
and ``e_a`` start at zero, so before training ``logits_a`` equal the LM's
logits exactly. At decoding both attributes run as one batch of 2B rows
through P (its own key/value cache), and since the head is affine::

    combine=base:      logits = W(u_base + alpha (u_0 - u_1)) = logits_LM + alpha (logits_0 - logits_1)
    combine=projected: logits = W(u_0 + alpha (u_0 - u_1))

one head product per token, so alpha = 0 (combine=base) is the LM itself.
"""

from __future__ import annotations

import torch
from torch import nn

from mltk.core.errors import ArtifactError, UsageError

NONTOXIC, TOXIC = 0, 1
KVCache = tuple[torch.Tensor, torch.Tensor]  # keys, values: [B, heads, positions, head_dim]


class ProjectionBlock(nn.Module):
    """A pre-norm GPT-2 block (causal self-attention + MLP) with its own key/value cache."""

    def __init__(self, *, width: int, heads: int, inner: int, eps: float, activation: str):
        super().__init__()
        from transformers.activations import ACT2FN

        if width % heads:
            raise UsageError(f"projection block: width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.qkv = nn.Linear(width, 3 * width)
        self.attn_out = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.fc_in = nn.Linear(width, inner)
        self.fc_out = nn.Linear(inner, width)
        self.act = ACT2FN[activation]

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """x [B, T, d] (positions after the cached ones) -> (y [B, T, d], cache including these positions)."""
        batch, length, width = x.shape
        head_dim = width // self.heads
        q, k, v = self.qkv(self.ln_1(x)).split(width, dim=-1)
        q, k, v = (t.view(batch, length, self.heads, head_dim).transpose(1, 2) for t in (q, k, v))
        past = 0
        if cache is not None:
            past = cache[0].shape[2]
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        if past == 0:
            attended = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif length == 1:
            attended = nn.functional.scaled_dot_product_attention(q, k, v)
        else:  # several new positions after a cache: each sees the cache and the new positions up to itself
            allowed = (torch.arange(length, device=x.device)[:, None] + past
                       >= torch.arange(past + length, device=x.device)[None, :])
            attended = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        attended = attended.transpose(1, 2).reshape(batch, length, width)
        x = x + self.attn_out(attended)
        x = x + self.fc_out(self.act(self.fc_in(self.ln_2(x))))
        return x, (k, v)

    @torch.no_grad()
    def copy_gpt2_block(self, block: nn.Module) -> None:
        """Take the weights of a transformers GPT2Block (whose Conv1D weights are stored [in, out])."""
        pairs = ((self.ln_1, block.ln_1, False), (self.qkv, block.attn.c_attn, True),
                 (self.attn_out, block.attn.c_proj, True), (self.ln_2, block.ln_2, False),
                 (self.fc_in, block.mlp.c_fc, True), (self.fc_out, block.mlp.c_proj, True))
        for mine, theirs, transpose in pairs:
            mine.weight.copy_(theirs.weight.t() if transpose else theirs.weight)
            mine.bias.copy_(theirs.bias)


class AdlmHead(nn.Module):
    """Every parameter ADLM adds to the frozen LM: projection block, attribute embeddings, discriminator."""

    def __init__(self, *, width: int, heads: int, inner: int, eps: float, activation: str):
        super().__init__()
        self.spec = {"width": width, "heads": heads, "inner": inner, "eps": eps, "activation": activation}
        self.projection = ProjectionBlock(width=width, heads=heads, inner=inner, eps=eps, activation=activation)
        self.attribute = nn.Parameter(torch.zeros(2, width))  # rows: non-toxic, toxic
        self.discriminator = nn.Linear(width, 2)

    @classmethod
    def for_lm(cls, lm: nn.Module) -> AdlmHead:
        """A head shaped for (and initialised from) a GPT-2-architecture LM."""
        config = gpt2_config(lm)
        head = cls(width=config.n_embd, heads=config.n_head, inner=config.n_inner or 4 * config.n_embd,
                   eps=config.layer_norm_epsilon, activation=config.activation_function)
        head.projection.copy_gpt2_block(lm.base_model.h[-1])
        return head

    @classmethod
    def from_spec(cls, spec: dict) -> AdlmHead:
        return cls(**{k: spec[k] for k in ("width", "heads", "inner", "eps", "activation")})

    def project(self, hidden: torch.Tensor, attributes: torch.Tensor,
                cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """hidden [B, T, d], attributes int64 [B] -> (z [B, T, d], cache)."""
        return self.projection(hidden + self.attribute[attributes][:, None, :], cache)

    def added_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def gpt2_config(lm: nn.Module):
    """The config of a GPT-2-architecture LM, or a UsageError naming what ADLM supports."""
    config = lm.config
    if config.model_type != "gpt2":
        raise UsageError(f"ADLM is implemented for GPT-2-architecture LMs (model_type gpt2); this LM is "
                         f"{config.model_type!r}",
                         hint="use a GPT-2 family model; base, dapt and dexperts work with any causal LM")
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        raise UsageError("ADLM: LMs with scale_attn_by_inverse_layer_idx are not supported")
    return config


def final_norm_and_head(lm: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The LM's final layer norm and output head (both frozen)."""
    return lm.base_model.ln_f, lm.get_output_embeddings()


def combine_states(base: torch.Tensor, nontoxic: torch.Tensor, toxic: torch.Tensor, *, alpha: float,
                   combine: str) -> torch.Tensor:
    """The normalised state whose head product is the steered logits (see the module docstring)."""
    anchor = base if combine == "base" else nontoxic
    if alpha == 0:
        return anchor
    return anchor + alpha * (nontoxic - toxic)


def check_head_fits(head: AdlmHead, lm: nn.Module, where: str) -> None:
    config = gpt2_config(lm)
    expected = {"width": config.n_embd, "heads": config.n_head}
    found = {k: head.spec[k] for k in expected}
    if found != expected:
        raise ArtifactError(f"{where}: the ADLM head was trained for width {found['width']} / {found['heads']} "
                            f"heads, the LM has {expected['width']} / {expected['heads']}",
                            hint="load the LM the head was trained on (its card's lm.reference)")


def pooled(states: torch.Tensor, mask: torch.Tensor, *, pool: str) -> torch.Tensor:
    """states [B, T, d], mask bool [B, T] -> [B, d]: mean over real positions, or the last real one."""
    if pool == "last":
        last = mask.long().sum(1).clamp_min(1) - 1
        return states[torch.arange(states.shape[0], device=states.device), last]
    weights = mask.to(states.dtype)[..., None]
    return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
