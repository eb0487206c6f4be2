"""Tests of vaecourse.prob: the log-densities against scipy, and the ELBO and the
importance-weighted bound on a model whose likelihood is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from vaecourse.prob import (
    elbo_from_log_weights,
    iw_bound,
    log_bernoulli,
    log_normal,
    log_standard_normal,
)

GEN = torch.Generator().manual_seed(0)


pytestmark = pytest.mark.usefixtures("float64")


def randn(*shape):
    return torch.randn(*shape, generator=GEN)


def test_log_densities_match_scipy():
    x, mu, logvar = randn(30), randn(30), randn(30)
    expected = stats.norm.logpdf(
        x.numpy(), mu.numpy(), np.exp(0.5 * logvar.numpy())
    )
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
    assert torch.isfinite(
        log_bernoulli(torch.tensor([0.0]), torch.tensor([200.0]))
    )


def test_bounds_on_a_model_with_known_likelihood():
    """z ~ N(0,1), x|z ~ N(z, 1): p(x) = N(0, 2), posterior N(x/2, 1/2). With q = prior,
    the ELBO is below log p(x), the IW bound rises with k towards it (within Monte Carlo
    error: it is a bound in expectation), and with q = posterior every weight equals
    p(x) so both bounds are exact."""
    x = torch.tensor(1.5)
    log_px = log_normal(x, torch.tensor(0.0), torch.tensor(math.log(2.0)))
    z = torch.randn(200_000, generator=torch.Generator().manual_seed(1))
    log_w = log_normal(x, z, torch.tensor(0.0))  # q = prior: w = p(x|z)
    elbo = elbo_from_log_weights(log_w)
    iw = [iw_bound(log_w.view(-1, k).T) for k in (1, 10, 100)]
    torch.testing.assert_close(iw[0].mean(), elbo)
    assert elbo < iw[1].mean() < iw[2].mean()
    assert elbo < log_px - 0.5
    for estimates in iw:
        se = estimates.std() / math.sqrt(len(estimates))
        assert estimates.mean() < log_px + 4 * se
    post_mu, post_lv = x / 2, torch.tensor(math.log(0.5))
    zq = post_mu + math.sqrt(0.5) * z
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


def test_iw_bound_is_the_log_of_the_mean_weight_even_where_weights_underflow():
    """log (1/k) Σ exp(log w_i), computed without forming w: log-weights of -1000 nats
    (exp underflows to 0) still give the right bound, and k = 1 is the weight itself."""
    log_w = torch.tensor(
        [[-1000.0, -1001.0], [-1002.0, -1000.5], [-999.0, -1003.0]]
    )
    shift = log_w.max(0).values
    expected = shift + torch.log(torch.exp(log_w - shift).mean(0))
    torch.testing.assert_close(iw_bound(log_w), expected)
    torch.testing.assert_close(iw_bound(log_w.T, dim=1), expected)
    assert torch.isfinite(iw_bound(log_w)).all()
    torch.testing.assert_close(iw_bound(log_w[:1]), log_w[0])
    torch.testing.assert_close(elbo_from_log_weights(log_w), log_w.mean(0))
