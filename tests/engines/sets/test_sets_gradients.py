"""The subset gradient: averaged over every subset of n of the N elements it equals the full-set gradient for
every parameter, slots and queries included with the slot residual on; the official-style correction
(scaling parameter gradients by N/n afterwards) is biased on exactly those parameters."""

from __future__ import annotations

import itertools

import torch

from mltk.engines.sets.model import SetModel, SetModelSpec

N, n = 8, 3


def _model(**kw) -> SetModel:
    torch.manual_seed(0)
    spec = SetModelSpec(**{"dim_in": 2, "hidden": 8, "slots": 3, "heads": 2, "outputs": 2, "out_features": 3,
                           "slot_type": "learned", "slot_residual": True, "head": "sab", "head_layers": 1, **kw})
    return SetModel(spec).double().train()


def _grads(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _loss(model, encoding):
    return (model.decode(encoding) ** 2).sum()


def _mean_over_every_subset(model, x, correction):
    total = None
    subsets = list(itertools.combinations(range(N), n))
    for subset in subsets:
        index = torch.tensor([subset])
        encoding = model.subset_gradient_encoding(x, None, n, 4, correction=correction, grad_index=index)
        loss = _loss(model, encoding)
        model.zero_grad()
        loss.backward()
        if correction == "none":
            model.official_grad_correct(N / n)
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        total = grads if total is None else {k: total[k] + grads[k] for k in total}
    return {k: v / len(subsets) for k, v in total.items()}


def _relative_errors(estimate, exact):
    # attention key biases get (mathematically) zero gradient: an absolute floor keeps them out of the ratio
    return {k: float((estimate[k] - exact[k]).norm() / (exact[k].norm() + 1e-6)) for k in exact}


def test_subset_gradient_is_unbiased_for_every_parameter_including_slots_with_residual():
    model = _model()
    x = torch.randn(1, N, 2, generator=torch.Generator().manual_seed(3), dtype=torch.double)
    exact = _grads(model, _loss(model, model.encode(x)))
    assert "pooler.slots" in exact and "pooler.q.weight" in exact
    errors = _relative_errors(_mean_over_every_subset(model, x, "unbiased"), exact)
    assert max(errors.values()) < 1e-9, errors


def test_official_correction_is_biased_on_slots_and_queries_with_residual():
    model = _model()
    x = torch.randn(1, N, 2, generator=torch.Generator().manual_seed(3), dtype=torch.double)
    exact = _grads(model, _loss(model, model.encode(x)))
    errors = _relative_errors(_mean_over_every_subset(model, x, "none"), exact)
    assert errors["pooler.slots"] > 0.05 and errors["pooler.q.bias"] > 0.05, errors
    # ... and unbiased on the parameters that reach the output only through the sums
    assert errors["pooler.k.weight"] < 1e-9 and errors["pooler.v.weight"] < 1e-9 and errors["extractor.0.weight"] < 1e-9
    assert errors["head.0.mab.norm1.weight"] < 1e-12  # the head's gradient is exact either way


def test_subset_gradient_forward_value_is_the_full_set_value_and_deepsets_mean_is_unbiased():
    model = _model(kind="deepsets", pooling="mean")
    x = torch.randn(1, N, 2, generator=torch.Generator().manual_seed(4), dtype=torch.double)
    full = model.encode(x)
    assert float((model.subset_gradient_encoding(x, None, n, 3) - full).detach().abs().max()) < 1e-12
    exact = _grads(model, _loss(model, full))
    errors = _relative_errors(_mean_over_every_subset(model, x, "unbiased"), exact)
    assert max(errors.values()) < 1e-9, errors
