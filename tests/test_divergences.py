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
    elbo_from_log_weights,
    gaussian_kl,
    gaussian_kl_standard,
    iw_bound,
    log_bernoulli,
    log_normal,
    log_standard_normal,
    mvn_kl,
)

GEN = torch.Generator().manual_seed(0)


@pytest.fixture(autouse=True)
def float64():
    """Double precision, so the comparisons test the formulas, not float32 rounding."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


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
