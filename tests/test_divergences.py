"""Tests of vaecourse.divergences against independent references: torch.distributions,
scipy, and Monte Carlo estimates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import distributions as D

from vaecourse.divergences import (
    bernoulli_kl,
    categorical_kl,
    elbo_from_log_weights,
    gaussian_kl,
    gaussian_kl_standard,
    iw_bound,
    log_bernoulli,
    log_normal,
    log_standard_normal,
    mean_and_standard_error,
    monte_carlo_kl,
    mvn_kl,
)

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
    assert bernoulli_kl(torch.tensor(0.0), torch.tensor(0.3)).item() == pytest.approx(
        -math.log(0.7)
    )
    assert bernoulli_kl(torch.tensor(1.0), torch.tensor(0.3)).item() == pytest.approx(
        -math.log(0.3)
    )
    assert bernoulli_kl(torch.tensor(0.4), torch.tensor(0.4)).item() == 0.0
    # support condition: q = 0 where p > 0 gives infinity
    assert bernoulli_kl(torch.tensor(0.2), torch.tensor(0.0)).item() == math.inf


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


def test_log_densities_match_scipy():
    x, mu, logvar = randn(30), randn(30), randn(30)
    expected = stats.norm.logpdf(x.numpy(), mu.numpy(), np.exp(0.5 * logvar.numpy()))
    np.testing.assert_allclose(log_normal(x, mu, logvar).numpy(), expected)
    np.testing.assert_allclose(
        log_standard_normal(x).numpy(), stats.norm.logpdf(x.numpy())
    )
    pixels = (torch.rand(30, generator=GEN) > 0.5).double()
    logits = randn(30) * 5
    probs = torch.sigmoid(logits).numpy()
    np.testing.assert_allclose(
        log_bernoulli(pixels, logits).numpy(),
        stats.bernoulli.logpmf(pixels.numpy(), probs),
        rtol=1e-10,
    )


def test_log_bernoulli_stays_finite_for_confident_logits():
    assert torch.isfinite(log_bernoulli(torch.tensor([0.0]), torch.tensor([200.0])))


def test_bounds_on_a_model_with_known_likelihood():
    """z ~ N(0,1), x|z ~ N(z, 1): p(x) = N(0, 2), posterior N(x/2, 1/2). With q = prior,
    the ELBO is below log p(x), the IW bound rises with k, and with q = posterior every
    weight equals p(x) so both bounds are exact."""
    x = torch.tensor(1.5)
    log_px = log_normal(x, torch.tensor(0.0), torch.tensor(math.log(2.0)))
    z = randn(20_000, 1)
    log_w = log_normal(x, z, torch.tensor(0.0)).squeeze(-1)  # q = prior: w = p(x|z)
    elbo = elbo_from_log_weights(log_w)
    assert elbo < iw_bound(log_w[:10]) < log_px + 1e-3
    iw = [iw_bound(log_w.view(-1, k).T).mean() for k in (1, 10, 100)]
    assert iw[0] < iw[1] < iw[2] < log_px
    torch.testing.assert_close(iw_bound(log_w.view(-1, 1).T).mean(), elbo)
    post_mu, post_lv = x / 2, torch.tensor(math.log(0.5))
    zq = post_mu + math.sqrt(0.5) * z.squeeze(-1)
    log_w = (
        log_normal(x, zq, torch.tensor(0.0))
        + log_standard_normal(zq)
        - log_normal(zq, post_mu, post_lv)
    )
    torch.testing.assert_close(elbo_from_log_weights(log_w), log_px)
    torch.testing.assert_close(iw_bound(log_w), log_px)


def test_log_bernoulli_broadcasts_images_against_several_samples_of_logits():
    x = (torch.rand(3, 5, generator=GEN) > 0.5).double()
    logits = randn(4, 3, 5)
    many = log_bernoulli(x, logits)
    assert many.shape == (4, 3, 5)
    torch.testing.assert_close(many[2], log_bernoulli(x, logits[2]))
    torch.testing.assert_close(log_bernoulli(x.bool(), logits), many)


# --- categorical KL, Monte Carlo estimates, and the identities of the KL chapter ---------


def dirichlet(alpha, k, n, seed):
    return torch.from_numpy(np.random.default_rng(seed).dirichlet(np.full(k, alpha), n))


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
    assert categorical_kl(no_one, FAIR).item() == pytest.approx(math.log(6 / 5))
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
    np.testing.assert_allclose(categorical_kl(p, q).numpy() / math.log(2), bits)


def test_kl_is_asymmetric_and_breaks_the_triangle_inequality():
    assert categorical_kl(FAIR, LOADED).item() == pytest.approx(0.242586, abs=1e-6)
    assert categorical_kl(LOADED, FAIR).item() == pytest.approx(0.293893, abs=1e-6)
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
            assert abs(ratio.item() - 1) < 2 * delta / min(a.item(), 1 - a.item())


@pytest.mark.parametrize("alpha", [1.0, 0.1])
def test_gibbs_inequality_jensen_step_and_pinsker_on_random_pairs(alpha):
    p, q = dirichlet(alpha, 5, 50_000, seed=5), dirichlet(alpha, 5, 50_000, seed=6)
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
        categorical_kl(torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.4, 0.4, 0.2])) > 0
    )


def test_support_condition_and_the_logarithmic_growth():
    assert D.kl_divergence(D.Uniform(0.0, 2.0), D.Uniform(0.0, 1.0)).item() == math.inf
    assert D.kl_divergence(D.Uniform(0.0, 1.0), D.Uniform(0.0, 2.0)).item() == (
        pytest.approx(math.log(2))
    )
    for exponent in (1, 2, 4, 8, 16):
        eps = 10.0**-exponent
        q_eps = torch.tensor([eps] + [(1 - eps) / 5] * 5)
        formula = math.log(1 / 6 / eps) / 6 + 5 / 6 * math.log(5 / 6 / (1 - eps))
        assert categorical_kl(FAIR, q_eps).item() == pytest.approx(formula, rel=1e-12)
    assert categorical_kl(q_eps, FAIR).item() == pytest.approx(math.log(6 / 5))


def mixture_log_density(x, weights, means, stds):
    return torch.logsumexp(
        weights.log()[:, None] + D.Normal(means[:, None], stds[:, None]).log_prob(x), 0
    )


def test_forward_kl_fit_matches_moments_and_reverse_fits_seek_the_modes():
    """The forward-KL Gaussian fit of a mixture has the mixture's mean and variance; the
    reverse fits from either side sit on the bumps, below the bound -log w_i."""
    weights, means = torch.tensor([0.3, 0.7]), torch.tensor([-2.5, 1.5])
    stds = torch.tensor([0.5, 0.7])
    grid = torch.linspace(-12, 12, 4801)
    log_p = mixture_log_density(grid, weights, means, stds)

    def kl(params, forward):
        log_q = D.Normal(params[0], params[1].exp()).log_prob(grid)
        if forward:
            return torch.trapezoid(log_p.exp() * (log_p - log_q), grid)
        return torch.trapezoid(log_q.exp() * (log_q - log_p), grid)

    def fit(start, forward):
        params = torch.tensor([start, 0.0], requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [params],
            max_iter=200,
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
            line_search_fn="strong_wolfe",
        )

        def closure():
            optimizer.zero_grad()
            loss = kl(params, forward)
            loss.backward()
            return loss

        optimizer.step(closure)
        return params.detach()

    m, log_s = fit(0.0, forward=True)
    mean = (weights * means).sum()
    var = (weights * (stds**2 + means**2)).sum() - mean**2
    assert m.item() == pytest.approx(mean.item(), abs=1e-5)
    assert (2 * log_s).exp().item() == pytest.approx(var.item(), rel=1e-5)
    for start, w, mu, sd in zip((-4.0, 4.0), weights, means, stds, strict=True):
        params = fit(start, forward=False)
        assert abs(params[0] - mu) < 0.1 and abs(params[1].exp() - sd) < 0.1
        assert kl(params, forward=False) <= kl(torch.stack([mu, sd.log()]), False)
        assert kl(torch.stack([mu, sd.log()]), False) <= -math.log(w)


def test_one_bump_bound_holds_for_overlapping_mixtures_too():
    """KL(N(mu_i, s_i²) ‖ p) <= -log w_i, by Monte Carlo (with a margin of 4 s.e.)."""
    weights = torch.tensor([0.2, 0.5, 0.3])
    means, stds = torch.tensor([-1.0, 0.0, 0.5]), torch.tensor([1.0, 0.7, 2.0])
    for w, mu, sd in zip(weights, means, stds, strict=True):
        x = mu + sd * randn(200_000)
        estimate, se = monte_carlo_kl(
            D.Normal(mu, sd).log_prob(x), mixture_log_density(x, weights, means, stds)
        )
        assert estimate - 4 * se <= -math.log(w)
        assert estimate < -math.log(w) - 0.05  # strictly below: the bumps overlap


def test_gaussian_kl_is_the_integral_of_the_continuous_definition():
    from scipy import integrate

    for mu0, s0, mu1, s1 in [(0.5, 0.8, -0.3, 1.5), (2.0, 0.3, 0.0, 1.0), (0, 2, 0, 1)]:
        p, q = stats.norm(mu0, s0), stats.norm(mu1, s1)
        value, _ = integrate.quad(
            lambda x, p=p, q=q: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -np.inf, np.inf
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
    assert z_score(monte_carlo_kl(log_ber(x, a), log_ber(x, b)), bernoulli_kl(a, b)) < 4
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


def test_expected_quadratic_form_is_trace_plus_shift():
    """E[(x-m)ᵀA(x-m)] = tr(AΣ) + (μ-m)ᵀA(μ-m) for x ~ N(μ, Σ)."""
    k = 4
    mu, m, cov, a = randn(k), randn(k), random_spd(k), random_spd(k)
    x = mu + randn(300_000, k) @ torch.linalg.cholesky(cov).T
    quad = ((x - m) @ a * (x - m)).sum(-1)
    exact = torch.trace(a @ cov) + (mu - m) @ a @ (mu - m)
    assert z_score(mean_and_standard_error(quad), exact) < 4


def test_multivariate_log_density_formula_matches_scipy():
    """log N(x; μ, Σ) = -½ (k log 2π + log det Σ + (x-μ)ᵀ Σ⁻¹ (x-μ))."""
    k = 4
    mu, cov, x = randn(k), random_spd(k), randn(10, k)
    diff = x - mu
    maha = (diff @ torch.linalg.inv(cov) * diff).sum(-1)
    formula = -0.5 * (k * math.log(2 * math.pi) + torch.logdet(cov) + maha)
    expected = stats.multivariate_normal(mu.numpy(), cov.numpy()).logpdf(x.numpy())
    np.testing.assert_allclose(formula.numpy(), expected)


def test_standard_kl_is_the_full_formula_with_a_diagonal_covariance_and_the_prior():
    mu, logvar = randn(6), randn(6)
    ours = gaussian_kl_standard(mu, logvar).sum()
    k = len(mu)
    torch.testing.assert_close(
        ours, mvn_kl(mu, torch.diag(logvar.exp()), torch.zeros(k), torch.eye(k))
    )
    q = D.Independent(D.Normal(mu, (0.5 * logvar).exp()), 1)
    prior = D.Independent(D.Normal(torch.zeros(k), 1.0), 1)
    torch.testing.assert_close(ours, D.kl_divergence(q, prior))
    # the source notes' "-½ Σ (1 + γ - μ² - e^γ)" with γ = log σ² is the same number
    torch.testing.assert_close(ours, -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum())


def test_the_plus_log_det_slip_gives_negative_divergences():
    mu, logvar = torch.zeros(50), torch.linspace(-6, 3, 50)
    correct = gaussian_kl_standard(mu, logvar)
    slip = 0.5 * (logvar.exp() + mu**2 - 1 + logvar)
    assert (correct >= 0).all()
    assert (slip < 0).any()
    assert slip[logvar == logvar.min()].item() < -3


def test_kl_of_independent_products_is_the_sum():
    p1, q1 = dirichlet(1.0, 3, 1, seed=8)[0], dirichlet(1.0, 3, 1, seed=9)[0]
    p2, q2 = dirichlet(1.0, 4, 1, seed=10)[0], dirichlet(1.0, 4, 1, seed=11)[0]
    joint = categorical_kl(torch.outer(p1, p2).flatten(), torch.outer(q1, q2).flatten())
    torch.testing.assert_close(joint, categorical_kl(p1, q1) + categorical_kl(p2, q2))


def test_gaussian_kl_is_symmetric_for_equal_variances_only():
    mu0, mu1, logvar = torch.tensor(0.3), torch.tensor(-1.1), torch.tensor(-0.4)
    forward = gaussian_kl(mu0, logvar, mu1, logvar)
    torch.testing.assert_close(forward, gaussian_kl(mu1, logvar, mu0, logvar))
    torch.testing.assert_close(forward, (mu0 - mu1) ** 2 / (2 * logvar.exp()))
    zero, log4 = torch.tensor(0.0), torch.tensor(math.log(4))
    assert not torch.isclose(
        gaussian_kl(zero, zero, zero, log4), gaussian_kl(zero, log4, zero, zero)
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
