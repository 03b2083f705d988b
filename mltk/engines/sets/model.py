"""Set models: UMBC and the baselines it is compared with, one spec, one class.

Every kind maps sets ``x`` (B, N, dim_in), with ``mask`` (B, N) bool for padded sets, to ``outputs`` rows
of ``out_features`` each: (B, outputs, out_features). One row of class logits for classification; one row
per mixture component for clustering.

    kind             encoder (sees the elements)                          decoder (sees the encoding)
    umbc             extractor -> slot set encoder  [MBC]                 head: sab | isab | pma | deepsets | mlp
    sse              extractor -> slot set encoder  [MBC]                 slots as rows, or their mean -> linear
    deepsets         extractor -> sum | mean | max | min pooling  [MBC]   MLP
    set-transformer  extractor -> SAB/ISAB blocks over the elements -> PMA  (not MBC)  linear

An MBC encoder streams: ``begin(B)`` once per set (draws random slots), ``partial(chunk)`` per chunk,
``combine`` to add chunk states, ``finish`` once at the end; ``encode_stream(chunks)`` does all of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from mltk.engines.sets.inputs import BadSetError, check_chunk
from mltk.engines.sets.set_functions import ISAB, PMA, SAB, masked_pool
from mltk.engines.sets.slots import ACTIVATIONS, PartialSums, SlotSetEncoder

KINDS = ("umbc", "sse", "deepsets", "set-transformer")
HEADS = ("sab", "isab", "pma", "deepsets", "mlp")
POOLINGS = ("sum", "mean", "max", "min")


@dataclasses.dataclass(frozen=True)
class SetModelSpec:
    kind: str = "umbc"
    dim_in: int = 3
    outputs: int = 1  # rows of the output: 1 for classification, the mixture components for clustering
    out_features: int = 10  # per row: classes, or 1 + 2 * dims for a diagonal Gaussian component
    hidden: int = 128  # extractor width = slot size = set-function width
    extractor_layers: int = 1
    slots: int = 16  # K
    heads: int = 4
    slot_type: str = "random"  # learned | random (drawn once per set)
    activation: str = "softmax"  # softmax | sigmoid | slot-sigmoid | slot-softmax | slot-exp
    slot_residual: bool = True
    head: str = "sab"  # umbc's set function on the slots
    head_layers: int = 2  # SAB/ISAB blocks of the umbc head, or element blocks of the set transformer
    pooling: str = "mean"  # deepsets: sum | mean | max | min
    inducing: int = 16  # ISAB inducing points
    pma_feedforward: bool = True  # Linear + ReLU in front of PMA (the paper's rFF; the official code has none; see PMA)

    def problems(self) -> list[str]:
        found = []
        for key, allowed in (("kind", KINDS), ("head", HEADS), ("pooling", POOLINGS), ("activation", ACTIVATIONS),
                             ("slot_type", ("learned", "random"))):
            if getattr(self, key) not in allowed:
                found.append(f"{key}: {getattr(self, key)!r} is not one of {', '.join(allowed)}")
        for key in ("dim_in", "outputs", "out_features", "hidden", "extractor_layers", "slots", "heads", "inducing"):
            if getattr(self, key) < 1:
                found.append(f"{key}: must be at least 1, got {getattr(self, key)}")
        if self.head_layers < 0:
            found.append(f"head_layers: must not be negative, got {self.head_layers}")
        if self.hidden % max(self.heads, 1):
            found.append(f"hidden: {self.hidden} must be divisible by heads {self.heads}")
        return found

    @property
    def mbc(self) -> bool:
        return self.kind != "set-transformer"

    @classmethod
    def from_dict(cls, data: dict) -> SetModelSpec:
        return cls(**data)


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by ``factor`` (broadcast)."""

    @staticmethod
    def forward(ctx, tensor, factor):
        ctx.save_for_backward(factor)
        return tensor.clone()

    @staticmethod
    def backward(ctx, grad):
        (factor,) = ctx.saved_tensors
        return grad * factor, None


def scale_gradient(tensor: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _ScaleGradient.apply(tensor, factor)


def extractor(dim_in: int, hidden: int, layers: int) -> nn.Sequential:
    """The row-wise feature extractor phi (trivially MBC: one element at a time)."""
    parts: list[nn.Module] = [nn.Linear(dim_in, hidden), nn.ReLU()]
    for _ in range(layers - 1):
        parts += [nn.Linear(hidden, hidden), nn.ReLU()]
    return nn.Sequential(*parts)


class SetModel(nn.Module):
    def __init__(self, spec: SetModelSpec):
        super().__init__()
        problems = spec.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.spec = spec
        h, m = spec.hidden, spec.outputs
        self.extractor = extractor(spec.dim_in, h, spec.extractor_layers)
        if spec.kind in ("umbc", "sse"):
            self.pooler = SlotSetEncoder(dim_in=h, num_slots=spec.slots, dim=h, heads=spec.heads,
                                         slot_type=spec.slot_type, activation=spec.activation,
                                         slot_residual=spec.slot_residual)
        if spec.kind == "umbc":
            self.head = self._umbc_head(spec)
        elif spec.kind == "sse":
            self.rows = nn.Identity() if m == spec.slots else nn.Linear(h, m * h)
        elif spec.kind == "deepsets":
            self.head = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, m * h), nn.ReLU())
        else:
            self.blocks = nn.ModuleList(ISAB(h, spec.heads, spec.inducing) if spec.head == "isab" else SAB(h, spec.heads)
                                        for _ in range(spec.head_layers))
            self.pool = PMA(h, spec.heads, m, feedforward=spec.pma_feedforward)
            self.after_pool = SAB(h, spec.heads) if m > 1 else nn.Identity()
        self.output = nn.Linear(h, spec.out_features)

    @staticmethod
    def _umbc_head(spec: SetModelSpec) -> nn.Module:
        h, m = spec.hidden, spec.outputs
        if spec.head in ("sab", "isab"):
            block = (lambda: SAB(h, spec.heads)) if spec.head == "sab" else (lambda: ISAB(h, spec.heads, spec.inducing))
            pool = PMA(h, spec.heads, m, feedforward=spec.pma_feedforward)
            return nn.ModuleList([*(block() for _ in range(spec.head_layers)), pool])
        if spec.head == "pma":
            return nn.ModuleList([PMA(h, spec.heads, m, feedforward=spec.pma_feedforward)])
        if spec.head == "deepsets":
            return nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, m * h), nn.ReLU())
        return nn.Sequential(nn.Flatten(1), nn.Linear(spec.slots * h, h), nn.ReLU(), nn.Linear(h, m * h), nn.ReLU())

    # ------------------------------------------------------------ the streaming (MBC) encoder

    def begin(self, batch: int) -> Any:
        """Per-set context drawn once before the first chunk: the slot queries (random slots drawn here)."""
        self._require_mbc("begin")
        return self.pooler.sample_queries(batch) if self.spec.kind in ("umbc", "sse") else None

    def partial(self, x: torch.Tensor, context: Any, mask: torch.Tensor | None = None):
        """The state of one chunk (B, n, dim_in) of every set; states combine with ``combine``."""
        features = self.extractor(x)
        if self.spec.kind in ("umbc", "sse"):
            return self.pooler.partial(features, context, mask)
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return {"sum": masked_pool(features, mask, "sum"), "count": mask.sum(1, keepdim=True).to(features.dtype),
                "max": masked_pool(features, mask, "max"), "min": masked_pool(features, mask, "min")}

    def empty_state(self, context: Any, batch: int, like: torch.Tensor):
        if self.spec.kind in ("umbc", "sse"):
            return self.pooler.empty_sums(context)
        zeros = like.new_zeros(batch, self.spec.hidden)
        return {"sum": zeros, "count": like.new_zeros(batch, 1), "max": zeros - float("inf"),
                "min": zeros + float("inf")}

    @staticmethod
    def combine(a, b):
        if isinstance(a, PartialSums):
            return a + b
        return {"sum": a["sum"] + b["sum"], "count": a["count"] + b["count"],
                "max": torch.maximum(a["max"], b["max"]), "min": torch.minimum(a["min"], b["min"])}

    def finish(self, state, context: Any) -> torch.Tensor:
        """The set's encoding: slots (B, K, hidden), or the pooled vector (B, hidden) for deepsets."""
        if self.spec.kind in ("umbc", "sse"):
            return self.pooler.finish(state, context)
        if self.spec.pooling == "mean":
            return state["sum"] / state["count"].clamp(min=1)
        return state[self.spec.pooling]

    def _require_mbc(self, what: str) -> None:
        if not self.spec.mbc:
            raise TypeError(f"{what}: the plain set transformer is not mini-batch consistent (no streaming state)")

    # ------------------------------------------------------------ whole sets and streams

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoding of whole sets (B, N, dim_in) at once."""
        if not self.spec.mbc:
            features = self.extractor(x)
            for block in self.blocks:
                features = block(features, mask)
            return self.pool(features, mask)
        context = self.begin(x.shape[0])
        return self.finish(self.partial(x, context, mask), context)

    def encode_stream(self, chunks: Iterable[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The encoding of sets given as a stream of chunks (B, n_i, dim_in) (or (chunk, mask) pairs), with
        memory that does not grow with the number of chunks. For an MBC model it equals ``encode`` of the whole
        set (up to float rounding); for the plain set transformer it is the mean of the chunks' encodings,
        the usual way to stream a non-MBC model, and differs from the whole-set encoding."""
        context, state, seen, dim, batch, encodings = None, None, 0, None, None, []
        for index, item in enumerate(chunks):
            chunk, mask = item if isinstance(item, tuple) else (item, None)
            dim, batch = check_chunk(chunk, index, dim, batch)
            if chunk.shape[1] == 0:
                continue
            seen += int(chunk.shape[1]) if mask is None else int(mask.sum(1).max())
            if not self.spec.mbc:
                encodings.append(self.encode(chunk, mask))
                continue
            if context is None:
                context = self.begin(chunk.shape[0])
            part = self.partial(chunk, context, mask)
            state = part if state is None else self.combine(state, part)
        if seen == 0:
            raise BadSetError("the set is empty: no chunk held an element", hint="pass at least one element")
        if not self.spec.mbc:
            return torch.stack(encodings).mean(0)
        return self.finish(state, context)

    def decode(self, encoding: torch.Tensor) -> torch.Tensor:
        """Outputs (B, outputs, out_features) from an encoding."""
        spec, b = self.spec, encoding.shape[0]
        if spec.kind == "umbc":
            if spec.head in ("sab", "isab", "pma"):
                rows = encoding
                for block in self.head:
                    rows = block(rows)
            elif spec.head == "deepsets":
                rows = self.head(encoding.mean(1)).view(b, spec.outputs, spec.hidden)
            else:
                rows = self.head(encoding).view(b, spec.outputs, spec.hidden)
        elif spec.kind == "sse":
            rows = encoding if spec.outputs == spec.slots else self.rows(encoding.mean(1)).view(b, spec.outputs, -1)
        elif spec.kind == "deepsets":
            rows = self.head(encoding).view(b, spec.outputs, spec.hidden)
        else:
            rows = self.after_pool(encoding)
        return self.output(rows)

    # ------------------------------------------------------------ training on large sets

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, *, grad_subset: int = 0,
                chunk_size: int = 0) -> torch.Tensor:
        """Outputs of whole sets. With ``grad_subset`` n > 0 (MBC kinds): the whole set is forwarded in chunks
        of ``chunk_size`` without a graph, and only n random elements per set carry gradients, scaled so the
        gradient is an unbiased estimate of the full-set gradient (``subset_gradient_encoding``)."""
        if grad_subset and self.spec.mbc:
            encoding = self.subset_gradient_encoding(x, mask, grad_subset, chunk_size or x.shape[1])
        else:
            encoding = self.encode(x, mask)
        return self.decode(encoding)

    def subset_gradient_encoding(self, x: torch.Tensor, mask: torch.Tensor | None, grad_subset: int,
                                 chunk_size: int, *, correction: str = "unbiased",
                                 grad_index: torch.Tensor | None = None) -> torch.Tensor:
        """The exact full-set encoding, whose gradient is an unbiased estimate of the full-set gradient.

        The set's state is the sum of the states of the n elements that carry gradients (G) and of the
        rest (R, forwarded in chunks under no_grad). The gradient that reaches G's partial sums is multiplied
        by N/n: E_G[(N/n) sum_{i in G} d s_i] = sum_i d s_i, and the upstream gradient is evaluated at the
        exact full-set value, so every parameter before the sums gets an unbiased gradient, while parameters
        that reach the output another way (the slots through the slot residual, ``norm_after``, the head)
        get their exact gradient. ``correction="none"`` leaves G's gradient unscaled, which is what the
        official code does before multiplying parameter gradients afterwards (``official_grad_correct``).
        ``grad_index`` (B, n) fixes G instead of drawing it uniformly (tests enumerate every subset).
        """
        if self.spec.kind == "deepsets" and self.spec.pooling in ("max", "min"):
            raise TypeError("subset gradients need a sum-decomposable pooling (sum or mean), not max or min")
        b, n_all, dim = x.shape
        valid = mask if mask is not None else torch.ones(b, n_all, dtype=torch.bool, device=x.device)
        if grad_index is None:
            draw = torch.rand(b, n_all, device=x.device).masked_fill(~valid, 2.0)
            grad_index = draw.argsort(dim=1)[:, :grad_subset]
        grad_valid = valid.gather(1, grad_index)
        rest = valid.clone()
        rest.scatter_(1, grad_index, False)
        context = self.begin(b)
        with torch.no_grad():
            state = self.empty_state(context, b, x)
            for start in range(0, n_all, chunk_size):
                state = self.combine(state, self.partial(x[:, start:start + chunk_size], context,
                                                         rest[:, start:start + chunk_size]))
        chosen = self.partial(x.gather(1, grad_index[..., None].expand(-1, -1, dim)), context, grad_valid)
        if correction == "unbiased":
            factor = valid.sum(1).to(x.dtype) / grad_valid.sum(1).clamp(min=1).to(x.dtype)
            chosen = _scale_state(chosen, factor)
        elif correction != "none":
            raise ValueError(f"correction must be unbiased or none, got {correction!r}")
        return self.finish(self.combine(_detach_state(state), chosen), context)

    def official_grad_correct(self, factor: float) -> None:
        """The official code's correction, for comparison: multiply the gradients of every parameter before
        pooling (extractor, and the slot set encoder's, ``norm_after`` excepted) by N/n after backward."""
        names = [f"extractor.{n}" for n, _ in self.extractor.named_parameters()]
        if hasattr(self, "pooler"):
            names += [f"pooler.{n}" for n in self.pooler.pre_pooling_parameter_names()]
        params = dict(self.named_parameters())
        for name in names:
            if params[name].grad is not None:
                params[name].grad.mul_(factor)


def state_mismatch(model: SetModel, state: dict[str, torch.Tensor]) -> str:
    """'' when ``state`` has exactly the keys and shapes of ``model.state_dict()``, else one line saying what
    differs (a strict ``load_state_dict`` only says that something does on its first line)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]

    def listed(what, keys):
        return f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"

    parts = [listed(what, keys) for what, keys in (("missing", missing), ("unexpected", unexpected),
                                                    ("of another shape", shapes)) if keys]
    pma_ff = tuple(f"{name}.ff." for name, module in model.named_modules() if isinstance(module, PMA))
    if unexpected and not missing and all(k.startswith(pma_ff) for k in unexpected):
        parts.append("the unexpected ones are a Linear + ReLU in front of PMA: build with pma_feedforward=true")
    if missing and not unexpected and all(k.startswith(pma_ff) for k in missing):
        parts.append("the missing ones are a Linear + ReLU in front of PMA: build with pma_feedforward=false")
    return "; ".join(parts)


def _scale_state(state, factor: torch.Tensor):
    if isinstance(state, PartialSums):
        f = factor.view(-1, 1, 1, 1)
        return PartialSums(scale_gradient(state.numerator, f), scale_gradient(state.normaliser, f))
    return {**state, "sum": scale_gradient(state["sum"], factor.view(-1, 1))}


def _detach_state(state):
    if isinstance(state, PartialSums):
        return state.detach()
    return {k: v.detach() for k, v in state.items()}
