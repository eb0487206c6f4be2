"""Tests of vaecourse.chapters.kl against independent references: torch.distributions,
scipy, quadrature and Monte Carlo estimates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import distributions as D

from vaecourse.chapters.kl import (
    bernoulli_kl,
    categorical_kl,
    gaussian_kl,
    gaussian_kl_standard,
    mean_and_standard_error,
    monte_carlo_kl,
    mvn_kl,
)
from vaecourse.prob import log_normal, log_standard_normal

GEN = torch.Generator().manual_seed(0)


pytestmark = pytest.mark.usefixtures("float64")


def randn(*shape):
    return torch.randn(*shape, generator=GEN)


def test_bernoulli_kl_matches_torch_distributions():
    p = torch.rand(100, generator=GEN) * 0.98 + 0.01
    q = torch.rand(100, generator=GEN) * 0.98 + 0.01
    expected = D.kl_divergence(D.Bernoulli(probs=p), D.Bernoulli(probs=q))
    torch.testing.assert_close(bernoulli_kl(p, q), expected)


def test_bernoulli_kl_edge_cases_follow_the_conventions():
    # 0·log 0 = 0: a certain p against an uncertain q is finite
    assert bernoulli_kl(
        torch.tensor(0.0), torch.tensor(0.3)
    ).item() == pytest.approx(-math.log(0.7))
    assert bernoulli_kl(
        torch.tensor(1.0), torch.tensor(0.3)
    ).item() == pytest.approx(-math.log(0.3))
    assert bernoulli_kl(torch.tensor(0.4), torch.tensor(0.4)).item() == 0.0
    # support condition: q = 0 where p > 0 gives infinity
    assert (
        bernoulli_kl(torch.tensor(0.2), torch.tensor(0.0)).item() == math.inf
    )


def test_bernoulli_kl_rejects_values_outside_the_unit_interval():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bernoulli_kl(torch.tensor(1.2), torch.tensor(0.5))


def test_gaussian_kl_matches_torch_distributions_and_the_standard_case():
    mu0, mu1, lv0, lv1 = randn(50), randn(50), randn(50), randn(50)
    expected = D.kl_divergence(
        D.Normal(mu0, (0.5 * lv0).exp()), D.Normal(mu1, (0.5 * lv1).exp())
    )
    torch.testing.assert_close(gaussian_kl(mu0, lv0, mu1, lv1), expected)
    zeros = torch.zeros(50)
    torch.testing.assert_close(
        gaussian_kl_standard(mu0, lv0), gaussian_kl(mu0, lv0, zeros, zeros)
    )
    assert (gaussian_kl_standard(zeros, zeros) == 0).all()


def test_gaussian_kl_standard_against_monte_carlo():
    mu, logvar = torch.tensor([0.7, -1.2]), torch.tensor([-0.5, 0.8])
    z = mu + (0.5 * logvar).exp() * randn(400_000, 2)
    samples = log_normal(z, mu, logvar) - log_standard_normal(z)
    se = samples.std(0) / math.sqrt(len(z))
    err = (samples.mean(0) - gaussian_kl_standard(mu, logvar)).abs()
    assert (err < 5 * se).all()


def random_spd(k):
    a = randn(k, k)
    return a @ a.T + k * torch.eye(k)


def test_mvn_kl_matches_torch_distributions():
    for k in (1, 3, 6):
        mu0, mu1 = randn(k), randn(k)
        c0, c1 = random_spd(k), random_spd(k)
        expected = D.kl_divergence(
            D.MultivariateNormal(mu0, c0), D.MultivariateNormal(mu1, c1)
        )
        torch.testing.assert_close(mvn_kl(mu0, c0, mu1, c1), expected)


def test_mvn_kl_with_diagonal_covariances_is_the_sum_of_univariate_kls():
    mu0, mu1, lv0, lv1 = randn(4), randn(4), randn(4), randn(4)
    full = mvn_kl(mu0, torch.diag(lv0.exp()), mu1, torch.diag(lv1.exp()))
    torch.testing.assert_close(full, gaussian_kl(mu0, lv0, mu1, lv1).sum())


def test_mvn_kl_rejects_a_matrix_that_is_not_positive_definite():
    bad = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(torch.linalg.LinAlgError):
        mvn_kl(torch.zeros(2), bad, torch.zeros(2), torch.eye(2))


# --- categorical KL, Monte Carlo estimates, and the identities of the KL chapter ---------


def dirichlet(alpha, k, n, seed):
    return torch.from_numpy(
        np.random.default_rng(seed).dirichlet(np.full(k, alpha), n)
    )


FAIR = torch.full((6,), 1 / 6, dtype=torch.float64)
LOADED = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.1, 0.5], dtype=torch.float64)


def test_categorical_kl_matches_torch_distributions_and_scipy():
    p, q = dirichlet(1.0, 7, 200, seed=1), dirichlet(1.0, 7, 200, seed=2)
    ours = categorical_kl(p, q)
    expected = D.kl_divergence(D.Categorical(probs=p), D.Categorical(probs=q))
    torch.testing.assert_close(ours, expected)
    np.testing.assert_allclose(
        ours.numpy(), stats.entropy(p.numpy(), q.numpy(), axis=-1)
    )
    torch.testing.assert_close(categorical_kl(p.T, q.T, dim=0), ours)


def test_categorical_kl_follows_the_conventions():
    # 0·log 0 = 0: an outcome p never produces adds nothing (the naive formula gives NaN)
    p, q = torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.25, 0.25, 0.5])
    assert torch.isnan((p * torch.log(p / q)).sum())
    assert categorical_kl(p, q).item() == pytest.approx(math.log(2))
    # support condition: q = 0 where p > 0 gives +inf; the other direction is finite
    no_one = torch.tensor([0.0, 0.2, 0.2, 0.2, 0.2, 0.2])
    assert categorical_kl(FAIR, no_one).item() == math.inf
    assert categorical_kl(no_one, FAIR).item() == pytest.approx(
        math.log(6 / 5)
    )
    assert categorical_kl(FAIR, FAIR).item() == 0.0


@pytest.mark.parametrize(
    "p, q, message",
    [
        ([0.5, 0.6], [0.5, 0.5], "p must sum to 1"),
        ([0.5, 0.5], [0.2, 0.2], "q must sum to 1"),
        ([1.2, -0.2], [0.5, 0.5], "p has negative"),
    ],
)
def test_categorical_kl_rejects_what_is_not_a_distribution(p, q, message):
    with pytest.raises(ValueError, match=message) as error:
        categorical_kl(torch.tensor(p), torch.tensor(q))
    assert "negative" in message or "normalize" in str(error.value)


def test_categorical_kl_accepts_float32_rounding():
    p = torch.softmax(torch.randn(1000, generator=GEN), 0).float()
    assert torch.isfinite(categorical_kl(p, p.flip(0)))


def test_kl_is_cross_entropy_minus_entropy_and_scales_to_bits():
    p, q = dirichlet(1.0, 5, 100, seed=3), dirichlet(1.0, 5, 100, seed=4)
    cross_entropy = -(p * q.log()).sum(-1)
    entropy = -(p * p.log()).sum(-1)
    torch.testing.assert_close(categorical_kl(p, q), cross_entropy - entropy)
    bits = stats.entropy(p.numpy(), q.numpy(), base=2, axis=-1)
    np.testing.assert_allclose(
        categorical_kl(p, q).numpy() / math.log(2), bits
    )


def test_kl_is_asymmetric_and_breaks_the_triangle_inequality():
    assert categorical_kl(FAIR, LOADED).item() == pytest.approx(
        0.242586, abs=1e-6
    )
    assert categorical_kl(LOADED, FAIR).item() == pytest.approx(
        0.293893, abs=1e-6
    )
    c1, c2, c3 = torch.tensor(0.2), torch.tensor(0.5), torch.tensor(0.8)
    direct = bernoulli_kl(c1, c3)
    assert direct > bernoulli_kl(c1, c2) + bernoulli_kl(c2, c3)
    assert direct.item() == pytest.approx(0.6 * math.log(4))


def test_bernoulli_kl_is_locally_a_scaled_squared_distance():
    """KL(Ber(a) ‖ Ber(a + δ)) / (δ² / (2a(1-a))) -> 1, with an error of order δ."""
    for a in (0.05, 0.2, 0.5, 0.9):
        a = torch.tensor(a)
        for delta in (1e-2, 1e-3, 1e-4):
            ratio = bernoulli_kl(a, a + delta) / (delta**2 / (2 * a * (1 - a)))
            assert abs(ratio.item() - 1) < 2 * delta / min(
                a.item(), 1 - a.item()
            )


@pytest.mark.parametrize("alpha", [1.0, 0.1])
def test_gibbs_inequality_jensen_step_and_pinsker_on_random_pairs(alpha):
    p, q = (
        dirichlet(alpha, 5, 50_000, seed=5),
        dirichlet(alpha, 5, 50_000, seed=6),
    )
    kl = categorical_kl(p, q)
    assert (kl >= 0).all()
    ratio = torch.where(p > 0, q / p, 1.0)
    jensen_lhs = (p * ratio.log()).sum(-1)
    jensen_rhs = (p * ratio).sum(-1).log()
    assert (jensen_lhs <= jensen_rhs + 1e-12).all()
    torch.testing.assert_close(jensen_lhs, -kl)
    tv = 0.5 * (p - q).abs().sum(-1)
    assert (tv <= (kl / 2).sqrt()).all()
    assert (categorical_kl(p, p) == 0).all()


def test_kl_is_zero_only_when_the_distributions_are_equal():
    p = dirichlet(1.0, 4, 1, seed=7)[0]
    for eps in (1e-1, 1e-3, 1e-5):
        direction = torch.tensor([1.0, -1.0, 0.5, -0.5])
        assert categorical_kl(p, p + eps * direction * p.min()) > 0
    # equal only up to a set q gives no mass to: still not equal, still positive
    assert (
        categorical_kl(
            torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.4, 0.4, 0.2])
        )
        > 0
    )


def test_kl_grows_like_log_one_over_eps_as_q_starves_an_outcome():
    for exponent in (1, 2, 4, 8, 16):
        eps = 10.0**-exponent
        q_eps = torch.tensor([eps] + [(1 - eps) / 5] * 5)
        formula = math.log(1 / 6 / eps) / 6 + 5 / 6 * math.log(
            5 / 6 / (1 - eps)
        )
        assert categorical_kl(FAIR, q_eps).item() == pytest.approx(
            formula, rel=1e-12
        )
    assert categorical_kl(q_eps, FAIR).item() == pytest.approx(math.log(6 / 5))


def mixture_log_density(x, weights, means, stds):
    return torch.logsumexp(
        weights.log()[:, None]
        + D.Normal(means[:, None], stds[:, None]).log_prob(x),
        0,
    )


def test_one_bump_bound_holds_for_overlapping_mixtures_too():
    """KL(N(mu_i, s_i²) ‖ p) <= -log w_i, by Monte Carlo (with a margin of 4 s.e.)."""
    weights = torch.tensor([0.2, 0.5, 0.3])
    means, stds = torch.tensor([-1.0, 0.0, 0.5]), torch.tensor([1.0, 0.7, 2.0])
    for w, mu, sd in zip(weights, means, stds, strict=True):
        x = mu + sd * randn(200_000)
        estimate, se = monte_carlo_kl(
            D.Normal(mu, sd).log_prob(x),
            mixture_log_density(x, weights, means, stds),
        )
        assert estimate - 4 * se <= -math.log(w)
        assert (
            estimate < -math.log(w) - 0.05
        )  # strictly below: the bumps overlap


def test_gaussian_kl_is_the_integral_of_the_continuous_definition():
    from scipy import integrate

    for mu0, s0, mu1, s1 in [
        (0.5, 0.8, -0.3, 1.5),
        (2.0, 0.3, 0.0, 1.0),
        (0, 2, 0, 1),
    ]:
        p, q = stats.norm(mu0, s0), stats.norm(mu1, s1)
        value, _ = integrate.quad(
            lambda x, p=p, q=q: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)),
            -np.inf,
            np.inf,
        )
        closed = gaussian_kl(
            torch.tensor(mu0), torch.tensor(2 * math.log(s0)),
            torch.tensor(mu1), torch.tensor(2 * math.log(s1)),
        )  # fmt: skip
        assert closed.item() == pytest.approx(value, rel=1e-8)


def z_score(estimate_and_se, exact):
    estimate, se = estimate_and_se
    return ((estimate - exact) / se).abs().max().item()


def test_closed_forms_against_monte_carlo():
    n = 400_000
    # Bernoulli
    a, b = torch.tensor(0.05), torch.tensor(0.2)
    x = torch.bernoulli(a.expand(n), generator=GEN)
    log_ber = lambda x, r: x * r.log() + (1 - x) * (1 - r).log()  # noqa: E731
    assert (
        z_score(
            monte_carlo_kl(log_ber(x, a), log_ber(x, b)), bernoulli_kl(a, b)
        )
        < 4
    )
    # univariate Gaussians
    mu0, lv0, mu1, lv1 = randn(4)
    x = mu0 + (0.5 * lv0).exp() * randn(n)
    exact = gaussian_kl(mu0, lv0, mu1, lv1)
    estimate = monte_carlo_kl(log_normal(x, mu0, lv0), log_normal(x, mu1, lv1))
    assert z_score(estimate, exact) < 4
    # multivariate Gaussians, full covariance
    k = 3
    m0, m1, c0, c1 = randn(k), randn(k), random_spd(k), random_spd(k)
    x = m0 + randn(n, k) @ torch.linalg.cholesky(c0).T
    p, q = D.MultivariateNormal(m0, c0), D.MultivariateNormal(m1, c1)
    estimate = monte_carlo_kl(p.log_prob(x), q.log_prob(x))
    assert z_score(estimate, mvn_kl(m0, c0, m1, c1)) < 4
    # diagonal Gaussian against N(0, I), summed over 8 units
    mu, logvar = randn(8), randn(8) - 1
    z = mu + (0.5 * logvar).exp() * randn(n, 8)
    estimate = monte_carlo_kl(
        log_normal(z, mu, logvar).sum(-1), log_standard_normal(z).sum(-1)
    )
    assert z_score(estimate, gaussian_kl_standard(mu, logvar).sum()) < 4


def test_standard_kl_is_the_full_formula_with_a_diagonal_covariance_and_the_prior():
    mu, logvar = randn(6), randn(6)
    ours = gaussian_kl_standard(mu, logvar).sum()
    k = len(mu)
    torch.testing.assert_close(
        ours,
        mvn_kl(mu, torch.diag(logvar.exp()), torch.zeros(k), torch.eye(k)),
    )
    q = D.Independent(D.Normal(mu, (0.5 * logvar).exp()), 1)
    prior = D.Independent(D.Normal(torch.zeros(k), 1.0), 1)
    torch.testing.assert_close(ours, D.kl_divergence(q, prior))
    # the source notes' "-½ Σ (1 + γ - μ² - e^γ)" with γ = log σ² is the same number
    torch.testing.assert_close(
        ours, -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum()
    )


def test_kl_of_independent_products_is_the_sum():
    p1, q1 = dirichlet(1.0, 3, 1, seed=8)[0], dirichlet(1.0, 3, 1, seed=9)[0]
    p2, q2 = dirichlet(1.0, 4, 1, seed=10)[0], dirichlet(1.0, 4, 1, seed=11)[0]
    joint = categorical_kl(
        torch.outer(p1, p2).flatten(), torch.outer(q1, q2).flatten()
    )
    torch.testing.assert_close(
        joint, categorical_kl(p1, q1) + categorical_kl(p2, q2)
    )


def test_gaussian_kl_is_symmetric_for_equal_variances_only():
    mu0, mu1, logvar = (
        torch.tensor(0.3),
        torch.tensor(-1.1),
        torch.tensor(-0.4),
    )
    forward = gaussian_kl(mu0, logvar, mu1, logvar)
    torch.testing.assert_close(forward, gaussian_kl(mu1, logvar, mu0, logvar))
    torch.testing.assert_close(forward, (mu0 - mu1) ** 2 / (2 * logvar.exp()))
    zero, log4 = torch.tensor(0.0), torch.tensor(math.log(4))
    assert not torch.isclose(
        gaussian_kl(zero, zero, zero, log4),
        gaussian_kl(zero, log4, zero, zero),
    )


def test_mean_and_standard_error_match_numpy_and_scipy():
    values = randn(1000, 3)
    mean, se = mean_and_standard_error(values)
    np.testing.assert_allclose(mean.numpy(), values.numpy().mean(0))
    np.testing.assert_allclose(se.numpy(), stats.sem(values.numpy(), axis=0))
    mean1, se1 = mean_and_standard_error(values, dim=1)
    np.testing.assert_allclose(se1.numpy(), stats.sem(values.numpy(), axis=1))
    with pytest.raises(ValueError, match="at least 2 samples"):
        mean_and_standard_error(torch.ones(1, 5))


def test_monte_carlo_kl_standard_error_is_calibrated():
    """Intervals of ±2 s.e. contain the exact KL about 95% of the time."""
    mu0, s0, mu1, s1 = 0.5, 0.8, -0.3, 1.5
    exact = gaussian_kl(
        *map(torch.tensor, (mu0, 2 * math.log(s0), mu1, 2 * math.log(s1)))
    )
    x = mu0 + s0 * randn(4000, 250)
    p, q = D.Normal(mu0, s0), D.Normal(mu1, s1)
    estimates, ses = monte_carlo_kl(p.log_prob(x), q.log_prob(x), dim=1)
    coverage = ((estimates - exact).abs() <= 2 * ses).double().mean().item()
    assert 0.93 < coverage < 0.97
    assert estimates.std().item() == pytest.approx(ses.mean().item(), rel=0.05)
