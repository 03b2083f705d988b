"""BiTAT's per-layer transform and the importance-weighted binarization it drives.

What the paper says (abstract; the method section could not be read here):
each layer's weights get an orthonormal transformation, from an
input-dependent correlation matrix and an importance vector that are
trained, "such that each weight is disentangled from the others", and the
weights are then quantized "based on their importance".

mltk's interpretation (ours, not verified against the paper). For a layer
that computes ``y = W x`` on its (binarized) inputs ``x``, the output error
of replacing ``W`` by ``alpha * B`` (B in {-1, +1}, alpha per output) is::

    E ||(W - alpha B) x||^2 = sum_rows (w - alpha b)^T C (w - alpha b),   C = E[x x^T] = U diag(lam) U^T

In the eigenbasis ``U`` of the input correlation the error splits into
independent terms, one per direction, each weighted by its eigenvalue: ``U``
is the orthonormal transform that disentangles the weights and ``lam`` the
importance vector. Plain XNOR binarization (``b = sign(w)``,
``alpha = mean |w|``) is optimal only when ``C`` is the identity; with
correlated inputs (neighbouring pixels of a depthwise 3x3 patch, channels
that fire together) it is not. Importance-weighted binarization instead

* starts from ``b = sign(w)`` and improves the codes by iterated
  conditional modes on the C-weighted error (``b <- sign(C w - alpha (C -
  diag C) b)``, a candidate kept per output only when its error is lower),
* sets each output's scale to the C-weighted least-squares optimum
  ``alpha = sum b^T C w / sum b^T C b``.

The deployed layer is still ``alpha * conv(sign(x), B)``: the transform is
absorbed into the codes and scales ("aggregated"), so inference stays binary
and the artifact does not need to carry it. With ``C = I`` this is exactly
XNOR-Net's binarization, which makes the identity transform the baseline of
the comparison.

Transform variants (``bitat.transform``):

* ``identity``: C = I (XNOR codes and scales);
* ``pca``: U and lam from the eigendecomposition of the second moment of the
  layer's binarized inputs, measured on the network whose lower layers are
  already quantized (the progressive schedule calls :meth:`set_statistics`);
* ``learned``: starts from ``pca``; U = U0 R with R orthonormal by
  construction (Cayley transform or matrix exponential of a skew-symmetric
  parameter) and lam = lam0 exp(l), both trained with the task loss.

A PCA transform can be kept to its ``rank`` strongest directions
(``bitat.rank``): C ~ sigma I + V_k diag(lam_k - sigma) V_k^T, the top-k
eigendirections exact and the others at their mean eigenvalue sigma (so the
trace, and the mean importance, is unchanged). Rows times C then cost two
[O, d] x [d, k] products instead of one [O, d] x [d, d], which is most of
BiTAT's step on wide pointwise layers (d = 576, 960).

Layouts. A conv weight [O, I/g, kh, kw] is viewed as rows of length d that
one correlation matrix acts on: for dense and pointwise convs a row is one
output's weights over the input channels at one kernel position (d = I/g,
one C per group, shared by the kh*kw positions); for depthwise convs a row is
one channel's kh*kw kernel (d = kh*kw, one C per channel, from that
channel's patches). Linear layers are a 1x1 conv.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mltk.engines.quantize.quantizers import binary_sign

TRANSFORMS = ("identity", "pca", "learned")
PARAMETERIZATIONS = ("cayley", "expm")
_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class WeightLayout:
    """How a weight maps to rows [G, O, P, d] that a correlation [G, d, d] acts on.

    G groups (conv groups, or channels for a depthwise conv), O outputs per
    group, P rows per output (kernel positions in channel mode, 1 in spatial
    mode), d the row length.
    """

    mode: Literal["channel", "spatial"]
    groups: int
    outputs: int
    positions: int
    dim: int
    weight_shape: tuple[int, ...]

    @classmethod
    def of(cls, layer: nn.Module) -> WeightLayout:
        shape = tuple(layer.weight.shape)
        if isinstance(layer, nn.Linear):
            return cls("channel", 1, shape[0], 1, shape[1], shape)
        out, in_per_group, kh, kw = shape
        groups = layer.groups
        if in_per_group == 1 and kh * kw > 1:
            return cls("spatial", groups, out // groups, 1, kh * kw, shape)
        return cls("channel", groups, out // groups, kh * kw, in_per_group, shape)

    def view(self, weight: Tensor) -> Tensor:
        """weight (its own shape) -> [G, O, P, d]."""
        groups, outputs, dim = self.groups, self.outputs, self.dim
        if self.mode == "spatial":
            return weight.reshape(groups, outputs, 1, dim)
        return weight.reshape(groups, outputs, dim, self.positions).transpose(2, 3)

    def unview(self, rows: Tensor) -> Tensor:
        """[G, O, P, d] -> the weight's own shape."""
        if self.mode == "spatial":
            return rows.reshape(self.weight_shape)
        return rows.transpose(2, 3).reshape(self.weight_shape)


# ---------------------------------------------------------------- input statistics


# Values (float64) a slice of the calibration batch may expand to while its second moment is formed. Unfolded
# patches hold kh * kw copies of every input value: a batch of 128 MobileNetV2 inputs at 224 px took 13.7 GB
# at once (every layer binarized), where slices of this size take a few hundred MB whatever the image size.
MOMENT_SLICE_VALUES = 1 << 24


@torch.no_grad()
def input_second_moment(x: Tensor, layer: nn.Module, layout: WeightLayout) -> tuple[Tensor, int]:
    """(sum over samples of x x^T as float64 [G, d, d], number of samples) for ``layer``'s input ``x``.

    x: [B, I] for a Linear, [B, I, H, W] for a conv. Channel mode counts every
    pixel as a sample of the I/g input channels; spatial mode counts every
    patch the conv sees (with its padding, stride and dilation). The batch is
    taken a slice at a time (``MOMENT_SLICE_VALUES``) and the slices' sums added.
    """
    expansion = layout.dim if layout.mode == "spatial" else 1  # kh * kw copies of each value when unfolded
    per_slice = max(1, MOMENT_SLICE_VALUES // max(1, x[0].numel() * expansion))
    total, count = None, 0
    for begin in range(0, x.shape[0], per_slice):
        part, part_count = _second_moment(x[begin:begin + per_slice], layer, layout)
        total = part if total is None else total.add_(part)
        count += part_count
    return total, count


def _second_moment(x: Tensor, layer: nn.Module, layout: WeightLayout) -> tuple[Tensor, int]:
    G, d = layout.groups, layout.dim
    if isinstance(layer, nn.Linear):
        rows = x.reshape(-1, 1, d).double()
        return torch.einsum("ngd,nge->gde", rows, rows), rows.shape[0]
    if layout.mode == "channel":
        rows = x.double().reshape(x.shape[0], G, d, -1)
        return torch.einsum("bgdl,bgel->gde", rows, rows), rows.shape[0] * rows.shape[-1]
    patches = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding,
                       stride=layer.stride).double()
    patches = patches.reshape(x.shape[0], G, d, -1)
    return torch.einsum("bgdl,bgel->gde", patches, patches), patches.shape[0] * patches.shape[-1]


# ---------------------------------------------------------------- orthonormal parameterizations


def skew(param: Tensor) -> Tensor:
    """[..., d, d] -> the skew-symmetric A = P - P^T."""
    return param - param.transpose(-1, -2)


def cayley(a: Tensor) -> Tensor:
    """Skew-symmetric A [..., d, d] -> orthonormal (I + A)^-1 (I - A)."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    return torch.linalg.solve(eye + a, eye - a)


def orthonormal(param: Tensor, parameterization: str) -> Tensor:
    """An orthonormal matrix [..., d, d] from an unconstrained parameter of the same shape."""
    if parameterization == "cayley":
        return cayley(skew(param))
    if parameterization == "expm":
        return torch.linalg.matrix_exp(skew(param))
    raise ValueError(f"unknown parameterization {parameterization!r}; expected one of {PARAMETERIZATIONS}")


@dataclasses.dataclass(frozen=True)
class LowRankCorrelation:
    """C = sigma I + V diag(excess) V^T per group: sigma [G], directions V [G, d, k], excess [G, k]."""

    sigma: Tensor
    directions: Tensor
    excess: Tensor

    @property
    def requires_grad(self) -> bool:
        return False  # only PCA transforms are approximated, and their statistics are buffers

    def detach(self) -> LowRankCorrelation:
        return self

    def times(self, flat: Tensor) -> Tensor:
        """flat [G, N, d] @ C, as two thin products."""
        projected = (flat @ self.directions) * self.excess.unsqueeze(1)
        return torch.baddbmm(flat * self.sigma[:, None, None], projected, self.directions.transpose(-1, -2))

    def diagonal(self) -> Tensor:
        """[G, d]."""
        return self.sigma.unsqueeze(-1) + (self.directions.square() * self.excess.unsqueeze(1)).sum(-1)

    def dense(self) -> Tensor:
        """The full [G, d, d] matrix, to check the thin products against."""
        directions = self.directions
        eye = torch.eye(directions.shape[1], dtype=directions.dtype, device=directions.device)
        return self.sigma[:, None, None] * eye + (directions * self.excess.unsqueeze(1)) @ directions.transpose(-1, -2)


Correlation = Tensor | LowRankCorrelation


class CorrelationTransform(nn.Module):
    """One layer's input correlation as an orthonormal basis and an importance vector.

    ``correlation()`` -> C [G, d, d] = U diag(lam) U^T, or None for the
    identity transform. ``basis``/``importance`` buffers hold the PCA of the
    measured second moment; a learned transform multiplies the basis by an
    orthonormal R(skew_param) and the importance by exp(log_importance).
    A PCA transform with ``0 < rank < d / 2`` gives a :class:`LowRankCorrelation`
    of its ``rank`` strongest directions instead (at ``rank >= d / 2`` the thin
    products would cost as much as the full C, which is kept).
    """

    def __init__(self, layout: WeightLayout, *, kind: str, parameterization: str = "cayley", rank: int = 0):
        super().__init__()
        if kind not in TRANSFORMS:
            raise ValueError(f"unknown transform {kind!r}; expected one of {TRANSFORMS}")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {parameterization!r}; expected one of {PARAMETERIZATIONS}")
        if rank < 0 or (rank and kind != "pca"):
            raise ValueError(f"rank {rank}: a rank applies to the pca transform only, and must be >= 0")
        self.kind = kind
        self.parameterization = parameterization
        G, d = layout.groups, layout.dim
        self.rank = rank if 0 < 2 * rank < d else 0
        if kind == "identity":
            return
        self.register_buffer("basis", torch.eye(d).repeat(G, 1, 1))
        self.register_buffer("importance", torch.ones(G, d))
        if kind == "learned":
            self.rotation_param = nn.Parameter(torch.zeros(G, d, d))
            self.log_importance = nn.Parameter(torch.zeros(G, d))

    @torch.no_grad()
    def set_statistics(self, second_moment: Tensor) -> None:
        """Set U and lam from E[x x^T] [G, d, d] (eigenvalues floored, scaled to mean 1)."""
        if self.kind == "identity":
            return
        moment = 0.5 * (second_moment + second_moment.transpose(-1, -2)).double()
        eigenvalues, eigenvectors = torch.linalg.eigh(moment)
        top = eigenvalues.amax(dim=-1, keepdim=True).clamp_min(_EPS)
        eigenvalues = eigenvalues.clamp_min(1e-4 * top)
        eigenvalues = eigenvalues / eigenvalues.mean(dim=-1, keepdim=True)
        self.basis.copy_(eigenvectors.to(self.basis.dtype))
        self.importance.copy_(eigenvalues.to(self.importance.dtype))

    def rotation(self) -> Tensor:
        """The orthonormal transform U [G, d, d] (columns are directions)."""
        if self.kind == "identity":
            raise RuntimeError("the identity transform has no stored basis")
        if self.kind == "learned":
            return self.basis @ orthonormal(self.rotation_param, self.parameterization)
        return self.basis

    def importance_vector(self) -> Tensor:
        """lam [G, d], positive."""
        if self.kind == "learned":
            return self.importance * torch.exp(self.log_importance)
        return self.importance

    def correlation(self) -> Correlation | None:
        if self.kind == "identity":
            return None
        if self.kind == "learned":
            return self._compose()
        # A PCA transform changes only when its buffers do (set_statistics, a
        # loaded state, a move to another device): C = U diag(lam) U^T is a
        # d^3 product (885M multiply-adds at d = 960), so it is formed once
        # per change, not at every forward pass. The cache holds the buffers
        # themselves (compared by identity: a freed buffer's address cannot be
        # mistaken for the current one) and their in-place version counters.
        versions = (self.basis._version, self.importance._version)
        cache = getattr(self, "_correlation_cache", None)
        if cache is None or cache[0] is not self.basis or cache[1] is not self.importance or cache[2] != versions:
            self._correlation_cache = (self.basis, self.importance, versions, self._compose())
        return self._correlation_cache[3]

    def _compose(self) -> Correlation:
        u, importance = self.rotation(), self.importance_vector()
        if self.rank:
            top, index = importance.topk(self.rank, dim=-1)
            sigma = (importance.sum(-1) - top.sum(-1)) / (importance.shape[-1] - self.rank)
            directions = u.gather(-1, index.unsqueeze(1).expand(-1, u.shape[1], -1))
            return LowRankCorrelation(sigma, directions, top - sigma.unsqueeze(-1))
        return (u * importance.unsqueeze(-2)) @ u.transpose(-1, -2)

    def extra_repr(self) -> str:
        return f"kind={self.kind}" + (f", parameterization={self.parameterization}"
                                      if self.kind == "learned" else "") + (f", rank={self.rank}" if self.rank else "")


# ---------------------------------------------------------------- binarization


def times_correlation(rows: Tensor, correlation: Correlation) -> Tensor:
    """rows [G, O, P, d] @ C [G, d, d], as one [O*P, d] x [d, d] product per group.

    Broadcasting C over the O and P axes (``rows @ C.unsqueeze(1)``) gives
    the same numbers but runs O*P separate row-times-matrix products: at a
    960-output pointwise conv that is 960 calls instead of one GEMM, and it
    was most of a BiTAT training step. A :class:`LowRankCorrelation` runs as
    two thin products instead.
    """
    groups, outputs, positions, dim = rows.shape
    flat = rows.reshape(groups, outputs * positions, dim)
    if isinstance(correlation, LowRankCorrelation):
        return correlation.times(flat).reshape(rows.shape)
    return (flat @ correlation).reshape(rows.shape)


def correlation_diagonal(correlation: Correlation) -> Tensor:
    """diag C [G, d]."""
    if isinstance(correlation, LowRankCorrelation):
        return correlation.diagonal()
    return torch.diagonal(correlation, dim1=-2, dim2=-1)


def _fit_scales(codes: Tensor, rows: Tensor, c_codes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(alpha [G, O], numerator, denominator) of the least-squares scales for fixed codes.

    c_codes = codes @ C (the codes themselves when C = I). As C is symmetric,
    the numerator b^T C w is w^T (C b): no product of C with the rows, so the
    gradient reaches the rows without one either.
    """
    numerator = (rows * c_codes).sum(dim=(-1, -2))
    denominator = (codes * c_codes).sum(dim=(-1, -2)).clamp_min(_EPS)
    return numerator / denominator, numerator, denominator


def _take(values: Tensor, outputs: Tensor | None) -> Tensor:
    """values [G, O, ...] at the given outputs (all when None)."""
    return values if outputs is None else values[:, outputs]


def _put(values: Tensor, outputs: Tensor | None, new: Tensor) -> Tensor:
    """values with the given outputs set to ``new`` (``new`` itself when every output is given)."""
    if outputs is None:
        return new
    values[:, outputs] = new
    return values


def importance_binarize(rows: Tensor, correlation: Correlation | None, *, refine_iters: int) -> tuple[Tensor, Tensor]:
    """Binary codes and per-output scales minimising the C-weighted error of ``rows``.

    rows: [G, O, P, d] (a weight in :class:`WeightLayout` view); correlation:
    [G, d, d], a :class:`LowRankCorrelation`, or None (identity). Returns
    (codes [G, O, P, d] in {-1, +1}, detached; alpha [G, O], differentiable
    in rows and correlation).
    """
    codes = binary_sign(rows.detach())
    if correlation is None:
        alpha, *_ = _fit_scales(codes, rows, codes)
        return codes, alpha
    with torch.no_grad():
        rows_d, corr_d = rows.detach(), correlation.detach()
        c_rows = times_correlation(rows_d, corr_d) if refine_iters else None  # only the sweeps read C w
        diagonal = correlation_diagonal(corr_d).unsqueeze(1).unsqueeze(1)  # [G, 1, 1, d]
        c_codes = times_correlation(codes, corr_d)
        alpha, numerator, denominator = _fit_scales(codes, rows_d, c_codes)
        # minimising sum (w - a b)^T C (w - a b) over a leaves -numerator^2 / denominator
        error = -numerator.square() / denominator
        # An output whose codes a sweep left unchanged would propose the same candidate again, so
        # each sweep after the first visits only the outputs the one before improved (in any group).
        active = None  # every output
        for _ in range(refine_iters):
            off_diagonal = _take(c_codes, active) - diagonal * _take(codes, active)
            candidate = binary_sign(_take(c_rows, active) - _take(alpha, active)[..., None, None] * off_diagonal)
            cand_c = times_correlation(candidate, corr_d)
            cand_alpha, cand_num, cand_den = _fit_scales(candidate, _take(rows_d, active), cand_c)
            cand_error = -cand_num.square() / cand_den
            better = cand_error < _take(error, active)
            improved = better.any(dim=0)
            if not bool(improved.any()):
                break
            keep = better[..., None, None]
            codes = _put(codes, active, torch.where(keep, candidate, _take(codes, active)))
            c_codes = _put(c_codes, active, torch.where(keep, cand_c, _take(c_codes, active)))
            alpha = _put(alpha, active, torch.where(better, cand_alpha, _take(alpha, active)))
            error = _put(error, active, torch.where(better, cand_error, _take(error, active)))
            active = improved.nonzero().squeeze(1) if active is None else active[improved]
    if correlation.requires_grad:  # a learned transform: its gradient flows through C b
        c_codes = times_correlation(codes, correlation)
    alpha, *_ = _fit_scales(codes, rows, c_codes)
    return codes, alpha


def weighted_error(weight: Tensor, binarized: Tensor, layout: WeightLayout, correlation: Correlation | None
                   ) -> Tensor:
    """sum over rows of (w - w_hat)^T C (w - w_hat), a scalar (C = I when None)."""
    diff = layout.view(weight - binarized)
    if correlation is None:
        return diff.square().sum()
    return (diff * times_correlation(diff, correlation)).sum()


class BinaryWeightQuantizer(nn.Module):
    """weight -> alpha * B of the same shape, with a straight-through gradient.

    Forward value: codes B and per-output scales alpha from
    :func:`importance_binarize` under this layer's transform. Backward: the
    latent weight gets the identity gradient where |w| <= 1 (ReActNet's
    clipped STE) plus the gradient through alpha; a learned transform gets its
    gradient through alpha.
    """

    def __init__(self, layout: WeightLayout, *, transform: CorrelationTransform, refine_iters: int = 3):
        super().__init__()
        self.layout = layout
        self.transform = transform
        self.refine_iters = refine_iters

    def _codes_alpha(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        return importance_binarize(self.layout.view(weight), self.transform.correlation(),
                                   refine_iters=self.refine_iters)

    def forward(self, weight: Tensor) -> Tensor:
        codes, alpha = self._codes_alpha(weight)
        binarized = self.layout.unview(codes * alpha[..., None, None])
        clipped = weight.clamp(-1, 1)
        return binarized + clipped - clipped.detach()

    @torch.no_grad()
    def codes_and_scale(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """(codes in {-1, +1} of weight's shape, alpha [O]): what a deployed layer stores."""
        codes, alpha = self._codes_alpha(weight)
        return self.layout.unview(codes), alpha.reshape(-1).clone()
