"""What a trained set model is scored on: consistency, accuracy and calibration, clustering likelihood, memory.

* ``consistency_gap``: the largest |full - streamed| of the outputs over random partitions (chunks of one
  element among them) and random orders of the sets.
* ``classify``: accuracy, NLL and ECE of held-out clouds, encoded streamed; with set-element dropout, the
  Monte-Carlo average of the class probabilities over ``mc_samples`` draws of kept elements.
* ``mixture_scores``: NLL per element of held-out mixture sets of each size, encoded streamed.
* ``peak_tensor_bytes``: the most tensor memory alive at once while a function runs (CPU: tracked per
  allocation; CUDA: the allocator's peak).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from mltk.core.seeding import generator as seeded_generator
from mltk.engines.sets.data import mixture_nll, sample_mixtures
from mltk.engines.sets.inputs import chunks_of, drop_elements, random_partition
from mltk.engines.sets.model import SetModel


@torch.no_grad()
def consistency_gap(model: SetModel, x: torch.Tensor, *, partitions: int, generator: torch.Generator) -> float:
    """max |model(x) - outputs of x streamed in random chunks, in a random order| over ``partitions`` draws;
    every fourth draw streams one element at a time. Random slots are drawn once per set and reused, so
    only the chunking differs (in eval mode they are the slot means anyway)."""
    state = torch.random.get_rng_state()
    full = model(x)
    n, worst = x.shape[1], 0.0
    for trial in range(partitions):
        order = torch.randperm(n, generator=generator)
        parts = n if trial % 4 == 3 else int(torch.randint(1, max(2, n // 2) + 1, (1,), generator=generator))
        sizes = random_partition(n, parts, generator)
        bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
        torch.random.set_rng_state(state)
        chunks = (x[:, order[a:b]] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
        worst = max(worst, float((model.decode(model.encode_stream(chunks)) - full).abs().max()))
    return worst


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 10) -> float:
    """ECE of class probabilities (S, C): sum over equal-width confidence bins of |accuracy - confidence|,
    weighted by the share of predictions in the bin."""
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=probs.dtype)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += float(inside.double().mean() * (correct[inside].mean() - confidence[inside].double().mean()).abs())
    return total


@torch.no_grad()
def class_probabilities(model: SetModel, clouds: torch.Tensor, *, chunk_size: int, batch: int = 64,
                        dropout: float = 0.0, mc_samples: int = 1, seed: int = 0) -> torch.Tensor:
    """Class probabilities (S, C) of clouds (S, P, d), each encoded in chunks of ``chunk_size`` points
    (MBC models; the set transformer sees the whole cloud); with ``dropout`` > 0 the mean over
    ``mc_samples`` random draws of kept elements."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(clouds), batch):
        x = clouds[start:start + batch].to(device)
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=device)
        samples = mc_samples if dropout > 0 else 1
        g = seeded_generator(seed, start, 0xD20)
        probs = 0
        for _ in range(samples):
            kept = drop_elements(mask, dropout, g) if dropout > 0 else mask
            if model.spec.mbc:
                encoding = model.encode_stream(chunks_of(x, chunk_size, kept))
            else:
                encoding = model.encode(x, kept)
            probs = probs + model.decode(encoding)[:, 0].float().softmax(-1)
        out.append((probs / samples).cpu())
    return torch.cat(out)


def classification_scores(probs: torch.Tensor, labels: torch.Tensor, bins: int) -> dict[str, float]:
    return {"accuracy": float((probs.argmax(1) == labels).float().mean()),
            "nll": float(F.nll_loss(probs.clamp(min=1e-12).log(), labels)),
            "ece": expected_calibration_error(probs, labels, bins)}


def corrupt(clouds: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    """Clouds with Gaussian jitter of ``std`` on every coordinate (a test-time distribution shift)."""
    return clouds + std * torch.randn(clouds.shape, generator=seeded_generator(seed, 0xC0AA))


@torch.no_grad()
def mixture_scores(model: SetModel, *, sizes, sets: int, components: int, dims: int, chunk_size: int,
                   seed: int) -> dict[str, float]:
    """Per test size: NLL per element of held-out mixture sets (the same sets for every model of a seed),
    encoded streamed (MBC) or whole (set transformer), and for the set transformer also streamed by
    averaging the chunks' encodings."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    scores = {}
    for size in sizes:
        x, _ = sample_mixtures(sets, size, seeded_generator(seed, 0x7E57, size), components=components, dims=dims,
                               dtype=dtype)
        x = x.to(device)
        outputs = model.decode(model.encode_stream(chunks_of(x, chunk_size))) if model.spec.mbc else model(x)
        scores[f"nll@{size}"] = float(mixture_nll(outputs, x).mean())
        if not model.spec.mbc:
            streamed = model.decode(model.encode_stream(chunks_of(x, chunk_size)))
            scores[f"nll_streamed@{size}"] = float(mixture_nll(streamed, x).mean())
    return scores


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of tensors that operators create and that are still alive (peak over the mode)."""

    def __init__(self):
        super().__init__()
        self.live, self.current, self.peak = {}, 0, 0

    def _release(self, key):
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(a, torch.Tensor)}  # views and in-place results of existing tensors are not new
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                key = t.untyped_storage().data_ptr()
                if key and key not in self.live and key not in inputs:
                    self.live[key] = t.untyped_storage().nbytes()
                    self.current += self.live[key]
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(t, self._release, key)
        return out


def peak_tensor_bytes(fn, device: torch.device | str = "cpu") -> tuple[object, int]:
    """(fn(), the peak bytes of tensors created and alive at once while it ran, on ``device``)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        result = fn()
        return result, torch.cuda.max_memory_allocated() - before
    with _LiveTensorBytes() as mode:
        result = fn()
    return result, mode.peak
