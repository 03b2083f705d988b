"""The motion priors: the flow's inverse and log-determinant are exact, sampling in chunks is sampling at once,
and the flow fits a two-mode motion that one Gaussian per step cannot."""

from __future__ import annotations

import torch
from torch.autograd.functional import jacobian

from mltk.engines.talk.priors import (
    ConditionalFlow,
    FlowARPrior,
    GaussianARPrior,
    gaussian_log_prob,
)


def _randomised_flow(dim: int, condition_dim: int) -> ConditionalFlow:
    torch.manual_seed(0)
    flow = ConditionalFlow(dim, condition_dim, layers=4, hidden=16).double()
    for coupling in flow.couplings:  # away from the identity map it starts as
        torch.nn.init.normal_(coupling.net[-1].weight, std=0.5)
        torch.nn.init.normal_(coupling.net[-1].bias, std=0.5)
    return flow


def test_flow_inverse_and_log_determinant_agree_with_autograd():
    flow = _randomised_flow(5, 3)
    condition = torch.randn(3, dtype=torch.float64)
    eps = torch.randn(5, dtype=torch.float64)
    motion, log_det_forward = flow(eps, condition)
    recovered, log_det_inverse = flow.inverse(motion, condition)
    torch.testing.assert_close(recovered, eps)
    forward_jacobian = jacobian(lambda e: flow(e, condition)[0], eps)
    inverse_jacobian = jacobian(lambda m: flow.inverse(m, condition)[0], motion)
    torch.testing.assert_close(log_det_forward, torch.linalg.slogdet(forward_jacobian)[1])
    torch.testing.assert_close(log_det_inverse, torch.linalg.slogdet(inverse_jacobian)[1])
    torch.testing.assert_close(log_det_inverse, -log_det_forward)


def test_gaussian_log_prob_is_the_diagonal_normal_density():
    x, mean, log_sigma = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3) * 0.3
    expected = torch.distributions.Normal(mean, log_sigma.exp()).log_prob(x).sum(-1)
    torch.testing.assert_close(gaussian_log_prob(x, mean, log_sigma), expected)


def test_sampling_in_chunks_draws_what_one_call_draws():
    for prior_class in (GaussianARPrior, FlowARPrior):
        torch.manual_seed(3)
        prior = prior_class(4, 6, hidden=8, flow_layers=2)
        audio = torch.randn(2, 9, 6)
        whole, _ = prior.sample(audio, generator=torch.Generator().manual_seed(5))
        generator = torch.Generator().manual_seed(5)
        first, carry = prior.sample(audio[:, :4], generator=generator)
        second, _ = prior.sample(audio[:, 4:], generator=generator, carry=carry)
        torch.testing.assert_close(torch.cat([first, second], 1), whole)


def test_flow_prior_fits_a_two_mode_motion_better_than_the_gaussian():
    """Head motion that goes either up or down for the same speech: one Gaussian per step must cover both modes."""
    torch.manual_seed(4)
    steps, frames = 80, 1
    audio = torch.zeros(64, frames, 2)

    def motion_batch() -> torch.Tensor:
        sign = torch.randint(0, 2, (64, 1, 1)).float() * 2 - 1  # up-and-right or down-and-left, never between
        return sign * torch.tensor([2.0, 1.0]) + 0.2 * torch.randn(64, frames, 2)

    nll = {}
    for prior_class in (GaussianARPrior, FlowARPrior):
        torch.manual_seed(4)
        prior = prior_class(2, 2, hidden=16, flow_layers=4)
        optimizer = torch.optim.Adam(prior.parameters(), lr=2e-2)
        for _ in range(steps):
            loss = -prior.log_prob(motion_batch(), audio).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        torch.manual_seed(99)
        with torch.no_grad():
            nll[prior_class.kind] = float(-prior.log_prob(motion_batch(), audio).mean())
    assert nll["flow"] < nll["gaussian"] - 1.0, nll
