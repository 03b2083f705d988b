"""The binarized layer computes sign-and-scale; BiTAT's transform is orthonormal and lowers the weighted error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mltk.engines.quantize.layers import DeployedInputQuantizer, QuantizedLayer, make_act_quantizer
from mltk.engines.quantize.quantizers import binary_sign, ste_sign
from mltk.engines.quantize.transforms import (
    BinaryWeightQuantizer,
    CorrelationTransform,
    LowRankCorrelation,
    WeightLayout,
    correlation_diagonal,
    importance_binarize,
    input_second_moment,
    times_correlation,
    weighted_error,
)


def _binary_layer(conv: nn.Module, *, kind: str = "identity", act: str = "sign") -> QuantizedLayer:
    layout = WeightLayout.of(conv)
    quantizer = BinaryWeightQuantizer(layout, transform=CorrelationTransform(layout, kind=kind))
    channels = conv.in_features if isinstance(conv, nn.Linear) else conv.in_channels
    layer = QuantizedLayer(conv, weight_quantizer=quantizer,
                           act_quantizer=make_act_quantizer(act, channels, ste="clipped", act_bits=1),
                           bits=1, act_bits=1)
    layer.act_on.fill_(True)
    layer.weight_on.fill_(True)
    return layer


@pytest.mark.parametrize("conv", [nn.Conv2d(6, 4, 3, padding=1, bias=True), nn.Conv2d(6, 6, 3, padding=1, groups=6),
                                  nn.Conv2d(6, 8, 1), nn.Conv2d(6, 4, 3, stride=2, groups=2)],
                         ids=["dense", "depthwise", "pointwise", "grouped"])
def test_xnor_layer_output_equals_the_reference_sign_and_scale(conv):
    torch.manual_seed(0)
    layer = _binary_layer(conv)
    x = torch.randn(2, 6, 7, 7)
    w = conv.weight
    alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)  # XNOR-Net: mean |w| per output channel
    reference = F.conv2d(torch.where(x >= 0, 1.0, -1.0), alpha * torch.where(w >= 0, 1.0, -1.0), conv.bias,
                         conv.stride, conv.padding, conv.dilation, conv.groups)
    assert torch.allclose(layer(x), reference, atol=1e-5)


def test_linear_layer_and_off_switches():
    torch.manual_seed(0)
    linear = nn.Linear(10, 3)
    layer = _binary_layer(linear)
    x = torch.randn(4, 10)
    w = linear.weight
    reference = F.linear(binary_sign(x), w.abs().mean(1, keepdim=True) * binary_sign(w), linear.bias)
    assert torch.allclose(layer(x), reference, atol=1e-5)
    layer.act_on.fill_(False)
    layer.weight_on.fill_(False)
    assert torch.allclose(layer(x), linear(x))  # switched off: exactly the float layer


def test_sign_maps_zero_to_plus_one_and_stes_differ():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
    assert ste_sign(x).tolist() == [-1, -1, 1, 1, 1]
    ste_sign(x, "clipped").sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 0]
    x.grad = None
    ste_sign(x, "approx").sum().backward()
    assert x.grad.tolist() == [0, 1, 2, 1, 0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binary_sign_with_threshold_is_the_sign_of_the_difference(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=gen).to(dtype)
    x[0, 0, 0, :3] = torch.tensor([0.0, -0.0, 0.25])
    threshold = torch.tensor([0.25, -0.3, 0.0], dtype=dtype).view(1, 3, 1, 1)
    x[0, 0, 1, 0] = 0.25  # exactly at the threshold: +1
    reference = torch.where(x - threshold >= 0, 1.0, -1.0).to(dtype)
    out = binary_sign(x, threshold)
    assert out.dtype == dtype and torch.equal(out, reference)
    assert set(out.unique().tolist()) == {-1.0, 1.0}
    assert out[0, 0, 1, 0] == 1 and binary_sign(torch.tensor([-0.0, 0.0])).tolist() == [1.0, 1.0]
    # the deployed input quantizer uses it: sign(x - threshold), per channel
    deployed = DeployedInputQuantizer("rsign", 3, 1).to(dtype)
    deployed.threshold.copy_(threshold.view(-1))
    assert torch.equal(deployed(x), reference)


def _correlated_binary_inputs(n: int, rho: float, samples: int = 4000) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    idx = torch.arange(n).float()
    cov = rho ** (idx[:, None] - idx[None]).abs()
    chol = torch.linalg.cholesky(cov + 1e-6 * torch.eye(n))
    return binary_sign(torch.randn(samples, n, generator=gen) @ chol.T + 0.3)


def test_importance_weighted_binarization_lowers_the_output_error_on_correlated_inputs():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 64, 3)  # 64 outputs, rows of length 9
    x = _correlated_binary_inputs(9, rho=0.8).reshape(-1, 1, 3, 3)
    layout = WeightLayout.of(conv)
    moment, count = input_second_moment(x, conv, layout)
    correlation = (moment / count).float()
    transform = CorrelationTransform(layout, kind="pca")
    transform.set_statistics(moment / count)
    assert torch.allclose(transform.correlation(), correlation, atol=1e-4)  # U diag(lam) U^T rebuilds C (scaled)
    rows = layout.view(conv.weight.detach())
    xnor_codes, xnor_alpha = importance_binarize(rows, None, refine_iters=0)
    codes, alpha = importance_binarize(rows, correlation, refine_iters=3)
    xnor = layout.unview(xnor_codes * xnor_alpha[..., None, None])
    ours = layout.unview(codes * alpha[..., None, None])
    w = conv.weight.detach()
    # the measured output error E||(W - W_hat) x||^2 on the inputs themselves
    err_xnor = (F.conv2d(x, w) - F.conv2d(x, xnor)).square().mean()
    err_ours = (F.conv2d(x, w) - F.conv2d(x, ours)).square().mean()
    assert err_ours < 0.8 * err_xnor
    assert weighted_error(w, ours, layout, correlation) < weighted_error(w, xnor, layout, correlation)
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}


def test_identity_correlation_reproduces_xnor_exactly():
    torch.manual_seed(0)
    rows = torch.randn(2, 5, 9, 4)
    codes, alpha = importance_binarize(rows, torch.eye(4).repeat(2, 1, 1), refine_iters=3)
    assert torch.equal(codes, binary_sign(rows))
    assert torch.allclose(alpha, rows.abs().mean(dim=(-1, -2)), atol=1e-6)


@pytest.mark.parametrize("parameterization", ["cayley", "expm"])
def test_learned_transform_stays_orthonormal_after_training_steps(parameterization):
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 8, 1)
    layout = WeightLayout.of(conv)
    transform = CorrelationTransform(layout, kind="learned", parameterization=parameterization)
    x = binary_sign(torch.randn(16, 12, 4, 4) + torch.randn(16, 1, 4, 4))  # channels share a common factor
    moment, count = input_second_moment(x, conv, layout)
    transform.set_statistics(moment / count)
    quantizer = BinaryWeightQuantizer(layout, transform=transform)
    optimizer = torch.optim.Adam([*transform.parameters(), conv.weight], lr=0.1)
    start = transform.rotation().detach().clone()
    for _ in range(10):
        target = torch.randn(16, 8, 4, 4)
        loss = (F.conv2d(x, quantizer(conv.weight)) - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    u = transform.rotation().detach()
    assert not torch.allclose(u, start, atol=1e-3), "the transform was trained"
    eye = torch.eye(12).expand_as(u)
    assert torch.allclose(u.transpose(-1, -2) @ u, eye, atol=1e-5)
    assert torch.allclose(u @ u.transpose(-1, -2), eye, atol=1e-5)
    assert bool((transform.importance_vector() > 0).all())


def _reference_binarize(rows: torch.Tensor, correlation: torch.Tensor, sweeps: int):
    """The textbook loop: every output re-proposed at every sweep, C broadcast row by row, alpha = b^T C w / b^T C b."""
    c = correlation.unsqueeze(1)
    codes = binary_sign(rows.detach())

    def scales(b):
        return (b * (rows @ c)).sum(dim=(-1, -2)) / (b * (b @ c)).sum(dim=(-1, -2))

    for _ in range(sweeps):
        alpha = scales(codes).detach()
        error = -(alpha * (codes * (rows.detach() @ c)).sum(dim=(-1, -2)))
        diagonal = torch.diagonal(correlation, dim1=-2, dim2=-1)[:, None, None]
        candidate = binary_sign(rows.detach() @ c - alpha[..., None, None] * (codes @ c - diagonal * codes))
        cand_alpha = scales(candidate).detach()
        cand_error = -(cand_alpha * (candidate * (rows.detach() @ c)).sum(dim=(-1, -2)))
        codes = torch.where((cand_error < error)[..., None, None], candidate, codes)
    return codes, scales(codes)


@pytest.mark.parametrize("shape", [(1, 40, 1, 24), (3, 6, 4, 5)], ids=["pointwise", "grouped, positions"])
def test_refinement_of_improved_outputs_only_equals_re_proposing_every_output(shape):
    gen = torch.Generator().manual_seed(0)
    groups, _, _, dim = shape
    basis = torch.linalg.qr(torch.randn(groups, dim, dim, generator=gen, dtype=torch.float64))[0]
    importance = torch.rand(groups, dim, generator=gen, dtype=torch.float64) ** 4 * 10 + 1e-3  # far from I
    correlation = (basis * importance.unsqueeze(-2)) @ basis.transpose(-1, -2)
    rows = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    codes, alpha = importance_binarize(rows, correlation, refine_iters=6)
    ref_codes, ref_alpha = _reference_binarize(rows, correlation, sweeps=6)
    assert not torch.equal(codes, binary_sign(rows.detach()))  # the refinement changed some codes
    assert torch.equal(codes, ref_codes)
    assert torch.allclose(alpha, ref_alpha, atol=1e-12)
    # the scales' gradient (taken through C b, not C w) is the textbook one
    weights = torch.randn(alpha.shape, generator=gen, dtype=torch.float64)
    grad, = torch.autograd.grad((alpha * weights).sum(), rows)
    ref_grad, = torch.autograd.grad((ref_alpha * weights).sum(), rows)
    assert torch.allclose(grad, ref_grad, atol=1e-12)


def test_a_pca_transform_forms_its_correlation_again_only_when_its_statistics_change():
    conv = nn.Conv2d(8, 4, 1)
    layout = WeightLayout.of(conv)
    transform = CorrelationTransform(layout, kind="pca")
    x = binary_sign(torch.randn(16, 8, 4, 4, generator=torch.Generator().manual_seed(0)) + 0.5)
    moment, count = input_second_moment(x, conv, layout)
    first = transform.correlation()
    assert transform.correlation() is first  # formed once
    transform.set_statistics(moment / count)
    measured = transform.correlation()
    assert measured is not first and not torch.allclose(measured, first)
    assert torch.allclose(measured, (transform.basis * transform.importance.unsqueeze(-2)) @ transform.basis.mT)
    fresh = CorrelationTransform(layout, kind="pca")
    fresh.correlation()
    fresh.load_state_dict(transform.state_dict())  # a resumed run: the loaded statistics, not the cached identity
    assert torch.equal(fresh.correlation(), measured)
    assert fresh.double().correlation().dtype == torch.float64  # and a move re-forms it on the new tensors


def test_a_low_rank_correlation_keeps_the_strongest_directions_exactly_and_the_others_at_their_mean():
    conv = nn.Conv2d(16, 32, 1)  # rows of length 16
    layout = WeightLayout.of(conv)
    x = _correlated_binary_inputs(16, rho=0.8).reshape(-1, 16, 1, 1)
    moment, count = input_second_moment(x, conv, layout)
    full, low = CorrelationTransform(layout, kind="pca"), CorrelationTransform(layout, kind="pca", rank=3)
    full.set_statistics(moment / count)
    low.set_statistics(moment / count)
    approx = low.correlation()
    assert isinstance(approx, LowRankCorrelation)
    eigenvalues, directions = torch.linalg.eigh(full.correlation().double())
    dense = approx.dense().double()
    strongest, others = directions[..., -3:], directions[..., :-3]
    assert torch.allclose(dense @ strongest, strongest * eigenvalues[..., -3:].unsqueeze(-2), atol=1e-4)
    assert torch.allclose(dense @ others, others * eigenvalues[..., :-3].mean(), atol=1e-4)
    assert torch.allclose(dense.diagonal(dim1=-2, dim2=-1).sum(), eigenvalues.sum())  # the trace is kept
    # the thin products are the dense ones
    rows = layout.view(torch.randn_like(conv.weight))
    assert torch.allclose(times_correlation(rows, approx), times_correlation(rows, approx.dense()), atol=1e-5)
    assert torch.allclose(correlation_diagonal(approx), correlation_diagonal(approx.dense()), atol=1e-6)
    codes, alpha = importance_binarize(rows, approx, refine_iters=3)
    dense_codes, dense_alpha = importance_binarize(rows, approx.dense(), refine_iters=3)
    assert torch.equal(codes, dense_codes) and torch.allclose(alpha, dense_alpha, atol=1e-5)
    # at rank >= d / 2 the thin products would cost as much: the full C is kept
    assert isinstance(CorrelationTransform(layout, kind="pca", rank=8).correlation(), torch.Tensor)
    with pytest.raises(ValueError, match="pca transform only"):
        CorrelationTransform(layout, kind="identity", rank=3)


@pytest.mark.parametrize(("layer", "samples"), [(nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6), 5 * 16),
                                              (nn.Conv2d(6, 4, 1), 5 * 49), (nn.Conv2d(6, 4, 1, groups=2), 5 * 49),
                                              (nn.Linear(6, 4), 5)],
                         ids=["depthwise-strided", "pointwise", "grouped-pointwise", "linear"])
@pytest.mark.parametrize("slice_values", [1, 100, 1 << 24], ids=["one-sample-slices", "small-slices", "whole-batch"])
def test_the_input_second_moment_weights_a_row_as_the_layer_does_in_slices_of_any_size(layer, samples, slice_values,
                                                                                      monkeypatch):
    # w^T M w summed over a layer's rows is the energy of its output: the sum of (w . patch)^2 over every patch
    # (or pixel) the layer sees. It must not depend on how the batch is sliced to bound memory.
    import mltk.engines.quantize.transforms as transforms

    monkeypatch.setattr(transforms, "MOMENT_SLICE_VALUES", slice_values)
    layer = layer.double()
    x = torch.randn(5, 6, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    if isinstance(layer, nn.Linear):
        x = x[:, :, 0, 0]
    layout = WeightLayout.of(layer)
    moment, count = input_second_moment(x, layer, layout)
    rows = layout.view(layer.weight.detach())  # [G, O, P, d]
    energy = torch.einsum("gopd,gde,gope->", rows, moment, rows)
    output = layer(x) - layer.bias.view(1, -1, *[1] * (x.dim() - 2))
    assert torch.allclose(energy, output.square().sum(), rtol=1e-10)
    assert count == samples
