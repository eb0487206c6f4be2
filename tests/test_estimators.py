"""Tests of vaecourse.estimators against exact gradients, and of the identities the
reparameterization chapter states: the score has mean zero, autograd through
z = μ + σ ε gives the pathwise gradient, the inverse CDF reparameterizes any continuous
1-D distribution (and pushes a standard normal to any such distribution), and a discrete
sample passes no gradient."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from vaecourse.estimators import pathwise_gradient, score_function_gradient

pytestmark = pytest.mark.usefixtures("float64")


MU = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)
SIGMA = torch.tensor([0.8, 0.3, 1.5], dtype=torch.float64)


def square(z):
    return (z**2).sum(-1)


def exponential(z):
    return torch.exp(z).sum(-1)


# E_{N(μ,σ²)} Σ z² = Σ μ² + σ²;  E Σ exp(z) = Σ exp(μ + σ²/2)
EXACT = {
    "square": (square, 2 * MU, 2 * SIGMA),
    "exp": (
        exponential,
        torch.exp(MU + SIGMA**2 / 2),
        SIGMA * torch.exp(MU + SIGMA**2 / 2),
    ),
}


def within(estimates, exact, k=5.0):
    mean = estimates.mean(0)
    error = estimates.std(0) / math.sqrt(len(estimates))
    return bool(((mean - exact).abs() < k * error).all())


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("estimator", [score_function_gradient, pathwise_gradient])
def test_both_estimators_are_unbiased(name, estimator):
    f, grad_mu, grad_sigma = EXACT[name]
    g = torch.Generator().manual_seed(0)
    est_mu, est_sigma = estimator(f, MU, SIGMA, 400_000, generator=g)
    assert est_mu.shape == est_sigma.shape == (400_000, 3)
    assert within(est_mu, grad_mu) and within(est_sigma, grad_sigma)


@pytest.mark.parametrize("name", EXACT)
def test_pathwise_has_lower_variance_here(name):
    f = EXACT[name][0]
    g = torch.Generator().manual_seed(1)
    score = torch.cat(score_function_gradient(f, MU, SIGMA, 100_000, generator=g), 1)
    path = torch.cat(pathwise_gradient(f, MU, SIGMA, 100_000, generator=g), 1)
    assert (path.var(0) < score.var(0)).all()


def test_score_has_mean_zero_so_a_constant_shift_keeps_the_estimator_unbiased():
    g = torch.Generator().manual_seed(2)
    score_mu, score_sigma = score_function_gradient(
        lambda z: torch.ones(len(z)), MU, SIGMA, 400_000, generator=g
    )
    assert within(score_mu, torch.zeros(3)) and within(score_sigma, torch.zeros(3))


def test_pathwise_equals_autograd_through_the_reparameterization():
    """Autograd of f(μ + σ ε) w.r.t. μ and σ is the analytic pathwise gradient
    (∇f(z), ∇f(z) ⊙ ε): for f = Σ z², (2z, 2z ε)."""
    est_mu, est_sigma = pathwise_gradient(
        square, MU, SIGMA, 8, generator=torch.Generator().manual_seed(3)
    )
    eps = torch.randn(8, 3, generator=torch.Generator().manual_seed(3))
    mu, sigma = MU.clone().requires_grad_(True), SIGMA.clone().requires_grad_(True)
    z = mu + sigma * eps
    square(z).mean().backward()
    torch.testing.assert_close(mu.grad, est_mu.mean(0))
    torch.testing.assert_close(sigma.grad, est_sigma.mean(0))
    torch.testing.assert_close(est_mu, 2 * z.detach())
    torch.testing.assert_close(est_sigma, 2 * z.detach() * eps)


def test_torch_sample_is_not_differentiable_but_rsample_is():
    mu = torch.tensor(0.3, requires_grad=True)
    q = torch.distributions.Normal(mu, 1.0)
    assert not q.sample().requires_grad
    assert q.rsample().requires_grad


def test_inverse_cdf_gives_the_distribution_and_its_gradient():
    """z = -log(1 - u)/λ, u ~ U(0, 1), is Exp(λ); d/dλ E[z²] = d/dλ (2/λ²) = -4/λ³."""
    g = torch.Generator().manual_seed(4)
    lam = torch.tensor(1.7, requires_grad=True)
    u = torch.rand(400_000, generator=g)
    z = -torch.log1p(-u) / lam
    assert (
        stats.kstest(z.detach().numpy(), stats.expon(scale=1 / 1.7).cdf).pvalue > 0.01
    )
    # per-sample gradients: d(z²)/dλ = 2 z dz/dλ = -2 z²/λ
    per_sample = -2 * z.detach() ** 2 / lam.detach()
    (z**2).mean().backward()
    torch.testing.assert_close(lam.grad, per_sample.mean())
    assert within(per_sample.unsqueeze(1), torch.tensor([-4 / 1.7**3]))


def test_a_standard_normal_pushed_through_a_fixed_function_becomes_another_law():
    """F⁻¹(Φ(ε)) with ε ~ N(0, 1) has distribution F (here: Exp(1) and a Beta)."""
    eps = torch.randn(100_000, generator=torch.Generator().manual_seed(5)).numpy()
    uniform = stats.norm.cdf(eps)
    for target in (stats.expon(), stats.beta(2, 5)):
        assert stats.kstest(target.ppf(uniform), target.cdf).pvalue > 0.01


def test_gamma_rsample_gives_the_exact_gradient_of_the_mean():
    """torch reparameterizes the Gamma implicitly: d/dα E[z] = 1 for Gamma(α, 1)."""
    torch.manual_seed(6)
    alpha = torch.full((200_000,), 2.5, requires_grad=True)  # one α per sample
    z = torch.distributions.Gamma(alpha, 1.0).rsample()
    (grads,) = torch.autograd.grad(z.sum(), alpha)  # dz_i/dα, sample by sample
    assert within(grads.unsqueeze(1), torch.tensor([1.0]))


def test_a_discrete_sample_passes_no_gradient_but_the_score_function_does():
    """z = [u < p] ~ Bernoulli(p): d/dp E[f(z)] = f(1) - f(0), but z does not depend on p
    through any differentiable path; the score function gets it right."""
    p = torch.tensor(0.3, requires_grad=True)
    u = torch.rand(200_000, generator=torch.Generator().manual_seed(7))
    z = (u < p).double()
    assert not z.requires_grad

    def f(z):
        return (z - 2) ** 2  # f(1) - f(0) = 1 - 4 = -3

    score = torch.where(z == 1, 1 / p.detach(), -1 / (1 - p.detach()))
    assert within((f(z) * score).unsqueeze(1), torch.tensor([-3.0]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mu": torch.zeros(2, 2), "sigma": torch.ones(2, 2)}, "vectors"),
        ({"mu": torch.zeros(2), "sigma": torch.ones(3)}, "same shape"),
        ({"mu": torch.zeros(2), "sigma": torch.tensor([1.0, 0.0])}, "positive"),
        ({"mu": torch.zeros(2), "sigma": torch.ones(2), "n": 0}, "at least 1"),
        (
            {"mu": torch.zeros(2), "sigma": torch.ones(2), "f": lambda z: z},
            "n values",
        ),
    ],
)
@pytest.mark.parametrize("estimator", [score_function_gradient, pathwise_gradient])
def test_bad_input_is_rejected_with_a_clear_message(estimator, kwargs, message):
    arguments = {"f": square, "n": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        estimator(**arguments)


def test_gradient_of_the_kl_term_closed_form_and_pathwise():
    """∂/∂μ KL(N(μ, σ²) ‖ N(0, 1)) = μ and ∂/∂σ = σ - 1/σ, from the closed form by autograd
    and, on average, from the pathwise estimate of E_q[log q(z) - log p(z)]."""
    from vaecourse.divergences import (
        gaussian_kl_standard,
        log_normal,
        log_standard_normal,
    )

    mu = torch.tensor(1.5, requires_grad=True)
    sigma = torch.tensor(0.5, requires_grad=True)
    grads = torch.autograd.grad(
        gaussian_kl_standard(mu, 2 * torch.log(sigma)), (mu, sigma)
    )
    assert grads[0].item() == pytest.approx(1.5) and grads[1].item() == pytest.approx(
        -1.5
    )
    n = 200_000
    mu_n = torch.full((n,), 1.5, requires_grad=True)
    sigma_n = torch.full((n,), 0.5, requires_grad=True)
    z = mu_n + sigma_n * torch.randn(n, generator=torch.Generator().manual_seed(8))
    single = log_normal(z, mu_n, 2 * torch.log(sigma_n)) - log_standard_normal(z)
    g_mu, g_sigma = torch.autograd.grad(single.sum(), (mu_n, sigma_n))
    assert within(g_mu.unsqueeze(1), torch.tensor([1.5]))
    assert within(g_sigma.unsqueeze(1), torch.tensor([-1.5]))


def test_gumbel_max_samples_the_categorical_distribution():
    pi = torch.tensor([0.2, 0.5, 0.3])
    u = torch.rand(200_000, 3, generator=torch.Generator().manual_seed(9))
    choice = torch.argmax(torch.log(pi) - torch.log(-torch.log(u)), dim=1)
    counts = torch.bincount(choice, minlength=3).numpy()
    assert stats.chisquare(counts, pi.numpy() * len(choice)).pvalue > 0.01
