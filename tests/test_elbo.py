"""Tests of vaecourse.chapters.elbo (the linear-Gaussian model) against independent references (scipy, sklearn,
torch.distributions, quadrature, Monte Carlo), and of the identities the ELBO chapter
checks on that model: the ELBO decomposition, the bound, its gap, importance sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from sklearn.decomposition import PCA
from torch import distributions as D

from vaecourse.chapters.elbo import (
    expected_log_likelihood,
    fit_ppca,
    log_likelihood,
    log_marginal,
    posterior,
)
from vaecourse.chapters.kl import gaussian_kl_standard, mvn_kl
from vaecourse.prob import (
    elbo_from_log_weights,
    iw_bound,
    log_standard_normal,
)

pytestmark = pytest.mark.usefixtures("float64")


def model(d=6, k=2, sigma2=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, k, generator=g, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    return W, b, torch.tensor(sigma2, dtype=torch.float64)


def data(W, b, sigma2, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, W.shape[1], generator=g)
    return (
        z @ W.T + b + sigma2.sqrt() * torch.randn(n, W.shape[0], generator=g)
    )


def random_gaussians(k, n, seed=2):
    """n random Gaussians on R^k: means, full covariances (well conditioned)."""
    g = torch.Generator().manual_seed(seed)
    means = 2 * torch.randn(n, k, generator=g)
    A = torch.randn(n, k, k, generator=g)
    covs = A @ A.transpose(-1, -2) / k + 0.05 * torch.eye(k)
    return means, covs


def test_log_likelihood_matches_torch_distributions():
    W, b, s2 = model()
    x = data(W, b, s2, 5)
    z = torch.randn(5, 7, 2, generator=torch.Generator().manual_seed(3))
    expected = D.Independent(D.Normal(z @ W.T + b, s2.sqrt()), 1).log_prob(
        x.unsqueeze(1)
    )
    torch.testing.assert_close(
        log_likelihood(x.unsqueeze(1), z, W, b, s2), expected
    )


def test_log_marginal_matches_scipy():
    W, b, s2 = model()
    x = data(W, b, s2, 20)
    cov = (W @ W.T + s2 * torch.eye(6)).numpy()
    expected = stats.multivariate_normal(b.numpy(), cov).logpdf(x.numpy())
    np.testing.assert_allclose(
        log_marginal(x, W, b, s2).numpy(), expected, rtol=1e-10
    )


def test_log_marginal_is_the_integral_of_likelihood_times_prior():
    """p(x) = ∫ p(x|z) p(z) dz, by quadrature in one latent dimension."""
    W, b, s2 = model(d=3, k=1)
    x = data(W, b, s2, 3)
    for row in x:

        def joint(z, row=row):
            z = torch.tensor([[z]])
            return math.exp(
                log_likelihood(row, z, W, b, s2).item()
                + log_standard_normal(z).sum().item()
            )

        value, _ = integrate.quad(
            joint, -12, 12, epsabs=0, epsrel=1e-11, limit=200
        )
        assert math.log(value) == pytest.approx(
            log_marginal(row, W, b, s2).item(), rel=1e-8
        )


def test_posterior_is_bayes_rule():
    """log p(z|x) = log p(x|z) + log p(z) - log p(x) at arbitrary z."""
    W, b, s2 = model()
    x = data(W, b, s2, 4)
    mean, cov = posterior(x, W, b, s2)
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(5))
    bayes = (
        log_likelihood(x, z, W, b, s2)
        + log_standard_normal(z).sum(-1)
        - log_marginal(x, W, b, s2)
    )
    exact = D.MultivariateNormal(mean, cov).log_prob(z)
    torch.testing.assert_close(bayes, exact)


def test_fit_ppca_matches_sklearn():
    """scikit-learn's PCA.score_samples is the PPCA log-likelihood (Tipping & Bishop).
    sklearn divides the covariance by n - 1: given that covariance, the models agree."""
    W, b, s2 = model(d=10, k=3)
    x = data(W, b, s2, 400)
    pca = PCA(n_components=3).fit(x.numpy())
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / (len(x) - 1)
    W_fit, b_fit, s2_fit = fit_ppca(mean, *torch.linalg.eigh(cov), 3)
    assert s2_fit.item() == pytest.approx(pca.noise_variance_, rel=1e-10)
    np.testing.assert_allclose(
        log_marginal(x, W_fit, b_fit, s2_fit).numpy(),
        pca.score_samples(x.numpy()),
        rtol=1e-10,
    )


def test_fit_ppca_is_the_maximum_likelihood_solution():
    """The gradient of the total log-likelihood vanishes at the fit, and random moves
    away from it lower the likelihood."""
    W0, b0, s20 = model(d=8, k=2)
    x = data(W0, b0, s20, 300)
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / len(x)
    W, b, s2 = fit_ppca(mean, *torch.linalg.eigh(cov), 2)
    W, b, s2 = (t.clone().requires_grad_(True) for t in (W, b, s2))
    total = log_marginal(x, W, b, s2).sum()
    grads = torch.autograd.grad(total, (W, b, s2))
    for grad in grads:
        assert grad.abs().max() < 1e-8 * len(x)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for _ in range(20):
            moved = log_marginal(
                x,
                W + 0.05 * torch.randn(W.shape, generator=g),
                b + 0.05 * torch.randn(b.shape, generator=g),
                s2 * (1 + 0.1 * torch.randn((), generator=g).abs()),
            ).sum()
            assert moved < total


def test_rotating_the_latent_space_leaves_the_marginal_unchanged():
    W, b, s2 = model()
    x = data(W, b, s2, 10)
    R, _ = torch.linalg.qr(
        torch.randn(2, 2, generator=torch.Generator().manual_seed(6))
    )
    torch.testing.assert_close(
        log_marginal(x, W @ R, b, s2), log_marginal(x, W, b, s2)
    )


def test_expected_log_likelihood_matches_monte_carlo():
    W, b, s2 = model()
    x = data(W, b, s2, 1)[0]
    means, covs = random_gaussians(2, 3)
    torch.manual_seed(7)
    for mean, cov in zip(means, covs, strict=True):
        z = D.MultivariateNormal(mean, cov).sample((200_000,))
        values = log_likelihood(x, z, W, b, s2)
        error = values.std() / math.sqrt(len(values))
        exact = expected_log_likelihood(x, mean, cov, W, b, s2)
        assert abs(values.mean() - exact) < 5 * error


def test_elbo_decomposition_and_gap_equal_the_posterior_kl():
    """log p(x) - KL(q ‖ p(z|x)) = E_q[log p(x|z)] - KL(q ‖ p(z)) for any Gaussian q, so
    ELBO ≤ log p(x) with the gap KL(q ‖ p(z|x))."""
    W, b, s2 = model(d=12, k=3)
    x = data(W, b, s2, 1)[0]
    log_px = log_marginal(x, W, b, s2)
    post_mean, post_cov = posterior(x, W, b, s2)
    means, covs = random_gaussians(3, 500)
    zero, eye = torch.zeros(3), torch.eye(3)
    elbo = expected_log_likelihood(x, means, covs, W, b, s2) - mvn_kl(
        means, covs, zero, eye
    )
    gap_kl = mvn_kl(means, covs, post_mean, post_cov)
    torch.testing.assert_close(log_px - elbo, gap_kl, rtol=1e-9, atol=1e-9)
    assert (elbo < log_px).all()


def test_elbo_is_tight_exactly_at_the_posterior():
    W, b, s2 = model(d=12, k=3)
    x = data(W, b, s2, 1)[0]
    mean, cov = posterior(x, W, b, s2)
    elbo = expected_log_likelihood(x, mean, cov, W, b, s2) - mvn_kl(
        mean, cov, torch.zeros(3), torch.eye(3)
    )
    assert elbo.item() == pytest.approx(
        log_marginal(x, W, b, s2).item(), abs=1e-10
    )


def test_jensen_form_of_the_elbo_matches_the_closed_form():
    """E_q[log p(x, z) - log q(z)] (Monte Carlo) = E_q[log p(x|z)] - KL(q ‖ p(z))."""
    W, b, s2 = model()
    x = data(W, b, s2, 1)[0]
    (mean,), (cov,) = random_gaussians(2, 1, seed=8)
    q = D.MultivariateNormal(mean, cov)
    torch.manual_seed(8)
    z = q.sample((200_000,))
    log_w = (
        log_likelihood(x, z, W, b, s2)
        + log_standard_normal(z).sum(-1)
        - q.log_prob(z)
    )
    closed = expected_log_likelihood(x, mean, cov, W, b, s2) - mvn_kl(
        mean, cov, torch.zeros(2), torch.eye(2)
    )
    error = log_w.std() / math.sqrt(len(log_w))
    assert abs(elbo_from_log_weights(log_w) - closed) < 5 * error


def test_importance_weights_are_constant_under_the_exact_posterior():
    """With q = p(z|x), log p(x, z) - log q(z) = log p(x) for every z: zero variance."""
    W, b, s2 = model()
    x = data(W, b, s2, 1)[0]
    mean, cov = posterior(x, W, b, s2)
    torch.manual_seed(11)
    z = D.MultivariateNormal(mean, cov).sample((1000,))
    log_w = (
        log_likelihood(x, z, W, b, s2)
        + log_standard_normal(z).sum(-1)
        - D.MultivariateNormal(mean, cov).log_prob(z)
    )
    torch.testing.assert_close(
        log_w, log_marginal(x, W, b, s2).expand(1000), rtol=0, atol=1e-9
    )


def test_naive_monte_carlo_is_unbiased_for_p_but_not_for_log_p():
    """(1/N) Σ p(x|z_i), z_i ~ p(z), has mean p(x); its log is biased low (Jensen)."""
    W, b, s2 = model(d=3, k=1, sigma2=1.0)
    x = data(W, b, s2, 1)[0]
    g = torch.Generator().manual_seed(9)
    z = torch.randn(
        20_000, 10, 1, generator=g
    )  # 20,000 estimates with N = 10 each
    log_lik = log_likelihood(x, z, W, b, s2)
    log_estimates = iw_bound(log_lik, dim=1)
    log_px = log_marginal(x, W, b, s2)
    ratios = torch.exp(log_estimates - log_px)  # p̂ / p
    assert abs(ratios.mean() - 1) < 5 * ratios.std() / math.sqrt(len(ratios))
    assert log_estimates.mean() < log_px


def test_importance_weighted_bound_rises_with_k_towards_log_p():
    W, b, s2 = model(d=12, k=3)
    x = data(W, b, s2, 1)[0]
    mean, cov = posterior(x, W, b, s2)
    q = D.MultivariateNormal(
        mean + cov.diagonal().sqrt(), 3 * cov
    )  # a poor proposal
    log_px = log_marginal(x, W, b, s2)
    torch.manual_seed(10)
    bounds = []
    for k in [1, 4, 16, 64]:
        z = q.sample((4000, k))
        log_w = log_likelihood(x, z, W, b, s2) + log_standard_normal(z).sum(-1)
        log_w = log_w - q.log_prob(z)
        estimates = iw_bound(log_w, dim=1)
        bounds.append(estimates.mean().item())
        if k == 1:
            error = estimates.std().item() / math.sqrt(len(estimates))
    closed_elbo = expected_log_likelihood(
        x, q.mean, q.covariance_matrix, W, b, s2
    ) - (mvn_kl(q.mean, q.covariance_matrix, torch.zeros(3), torch.eye(3)))
    assert abs(bounds[0] - closed_elbo.item()) < 5 * error
    assert all(a < c for a, c in zip(bounds, bounds[1:], strict=False))
    assert bounds[-1] < log_px.item()
    assert log_px.item() - bounds[-1] < 0.1 * (log_px.item() - bounds[0])


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: log_marginal(
                torch.zeros(3), torch.zeros(3), torch.zeros(3), 1.0
            ),
            "W",
        ),
        (
            lambda: log_marginal(
                torch.zeros(3), torch.zeros(3, 1), torch.zeros(2), 1.0
            ),
            "b must have shape",
        ),
        (
            lambda: posterior(
                torch.zeros(3), torch.zeros(3, 1), torch.zeros(3), 0.0
            ),
            "sigma2 must be positive",
        ),
        (
            lambda: fit_ppca(torch.zeros(3), torch.ones(3), torch.eye(3), 3),
            "latent size",
        ),
        (
            lambda: fit_ppca(torch.zeros(3), torch.ones(3), torch.eye(2), 1),
            "eigenvectors",
        ),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_gap_of_a_scaled_posterior_has_the_closed_form():
    """q = N(m, c² S) around the posterior N(m, S): gap = k/2 (c² - 1 - log c²)."""
    W, b, s2 = model(d=12, k=3)
    x = data(W, b, s2, 1)[0]
    log_px = log_marginal(x, W, b, s2)
    mean, cov = posterior(x, W, b, s2)
    for c in [0.1, 0.7, 1.0, 2.5]:
        elbo = expected_log_likelihood(x, mean, c**2 * cov, W, b, s2) - mvn_kl(
            mean, c**2 * cov, torch.zeros(3), torch.eye(3)
        )
        expected_gap = 3 / 2 * (c**2 - 1 - math.log(c**2))
        assert (log_px - elbo).item() == pytest.approx(expected_gap, abs=1e-9)


def test_best_diagonal_gaussian_keeps_the_mean_and_inverts_the_precision_diagonal():
    """Over diagonal Gaussians q = N(m, diag s²), KL(q ‖ N(μ, S)) is stationary at m = μ,
    s² = 1 / diag(S⁻¹), and no other diagonal q found by random search does better."""
    W, b, s2 = model(d=12, k=3)
    R, _ = torch.linalg.qr(
        torch.randn(3, 3, generator=torch.Generator().manual_seed(12))
    )
    x = data(W, b, s2, 1)[0]
    mean, cov = posterior(x, W @ R, b, s2)
    assert (
        cov - torch.diag(cov.diagonal())
    ).abs().max() > 1e-3  # really not diagonal
    best_var = 1 / torch.linalg.inv(cov).diagonal()
    m = mean.clone().requires_grad_(True)
    log_var = best_var.log().requires_grad_(True)
    kl = mvn_kl(m, torch.diag(log_var.exp()), mean, cov)
    for grad in torch.autograd.grad(kl, (m, log_var)):
        assert grad.abs().max() < 1e-10
    g = torch.Generator().manual_seed(13)
    for _ in range(200):
        other_m = mean + 0.1 * torch.randn(3, generator=g)
        other_var = best_var * torch.exp(0.3 * torch.randn(3, generator=g))
        assert mvn_kl(other_m, torch.diag(other_var), mean, cov) > kl


def test_decoder_gradient_moves_inside_the_expectation():
    """∇_b E_q[log p(x|z)] (closed form, by autograd) = E_q[∇_b log p(x|z)] (per sample)."""
    W, b, s2 = model()
    x = data(W, b, s2, 1)[0]
    (mean,), (cov,) = random_gaussians(2, 1, seed=14)
    b_exact = b.clone().requires_grad_(True)
    (exact,) = torch.autograd.grad(
        expected_log_likelihood(x, mean, cov, W, b_exact, s2), b_exact
    )
    torch.manual_seed(15)
    z = D.MultivariateNormal(mean, cov).sample((100_000,))
    per_sample = torch.func.vmap(
        torch.func.grad(lambda b, z: log_likelihood(x, z, W, b, s2)),
        in_dims=(None, 0),
    )(b, z)  # ∇_b log p(x|z), one row per sample
    error = per_sample.std(0) / math.sqrt(len(z))
    assert ((per_sample.mean(0) - exact).abs() < 5 * error).all()


def test_monte_carlo_reconstruction_term_is_unbiased_with_spread_one_over_root_L():
    W, b, s2 = model()
    x = data(W, b, s2, 1)[0]
    (mean,), (cov,) = random_gaussians(2, 1, seed=16)
    exact = expected_log_likelihood(x, mean, cov, W, b, s2)
    torch.manual_seed(17)
    spreads = []
    for L in [1, 100]:
        z = D.MultivariateNormal(mean, cov).sample((4000, L))
        estimates = log_likelihood(x, z, W, b, s2).mean(1)
        assert abs(estimates.mean() - exact) < 5 * estimates.std() / math.sqrt(
            4000
        )
        spreads.append(estimates.std())
    assert spreads[0] / spreads[1] == pytest.approx(10, rel=0.1)


def test_reparameterized_elbo_gradient_matches_the_exact_gradient():
    """Autograd through z = m + s ε of log p(x|z) - KL(q ‖ p(z)), averaged over ε, is the
    gradient of the closed-form ELBO with respect to (m, log s)."""
    W, b, s2 = model(d=12, k=3)
    x = data(W, b, s2, 1)[0]
    mean, cov = posterior(x, W, b, s2)
    m0, log_s0 = mean + 0.3, 0.5 * cov.diagonal().log() + 0.2
    m, log_s = (
        m0.clone().requires_grad_(True),
        log_s0.clone().requires_grad_(True),
    )
    exact = expected_log_likelihood(
        x, m, torch.diag(torch.exp(2 * log_s)), W, b, s2
    )
    exact = exact - gaussian_kl_standard(m, 2 * log_s).sum()
    exact_grad = torch.cat(torch.autograd.grad(exact, (m, log_s)))
    n = 100_000
    m = m0.expand(n, 3).clone().requires_grad_(True)
    log_s = log_s0.expand(n, 3).clone().requires_grad_(True)
    eps = torch.randn(n, 3, generator=torch.Generator().manual_seed(18))
    single = log_likelihood(x, m + torch.exp(log_s) * eps, W, b, s2)
    single = single - gaussian_kl_standard(m, 2 * log_s).sum(-1)
    per_sample = torch.cat(torch.autograd.grad(single.sum(), (m, log_s)), 1)
    error = per_sample.std(0) / math.sqrt(n)
    assert ((per_sample.mean(0) - exact_grad).abs() < 5 * error).all()


def test_gaussian_decoder_log_likelihood_is_a_scaled_squared_error():
    """log N(x; g, σ² I) = -d/2 log(2πσ²) - d·MSE/(2σ²), with MSE the per-pixel mean."""
    W, b, s2 = model(d=9, k=2)
    x = data(W, b, s2, 4)
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(19))
    mse = ((x - (z @ W.T + b)) ** 2).mean(-1)
    expected = -9 / 2 * torch.log(2 * math.pi * s2) - 9 * mse / (2 * s2)
    torch.testing.assert_close(log_likelihood(x, z, W, b, s2), expected)


def test_fit_ppca_does_not_depend_on_the_eigenvectors_signs():
    """LAPACK builds return eigenvectors with either sign; W must come out the same."""
    torch.manual_seed(0)
    x = torch.randn(200, 6, dtype=torch.float64) @ torch.randn(
        6, 6, dtype=torch.float64
    )
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / len(x)
    values, vectors = torch.linalg.eigh(cov)
    flipped = vectors * torch.tensor(
        [1, -1, 1, -1, -1, 1], dtype=torch.float64
    )
    W, _, _ = fit_ppca(mean, values, vectors, 3)
    W_flipped, _, _ = fit_ppca(mean, values, flipped, 3)
    assert torch.equal(W, W_flipped)
