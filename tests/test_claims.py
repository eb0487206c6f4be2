"""The claims the chapters make about mathematics and about torch and scipy,
checked independently of the package.

The package's own tests are in the other files. These check the identities and
facts a chapter states (an equation, a sign, a property of torch's samplers)
that no function of the package computes, so that a sentence in the book cannot
quietly become false: each test names the claim it checks, and each claim is
also checked numerically in its chapter.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import distributions as D

from vaecourse.chapters.kl import gaussian_kl_standard, mean_and_standard_error
from vaecourse.prob import log_bernoulli

pytestmark = pytest.mark.usefixtures("float64")

GEN = torch.Generator().manual_seed(0)


def randn(*shape):
    return torch.randn(*shape, generator=GEN)


def random_spd(k):
    a = randn(k, k)
    return a @ a.T + k * torch.eye(k)


def z_score(estimate_and_se, exact):
    estimate, se = estimate_and_se
    return ((estimate - exact) / se).abs().max().item()


def within(estimates, exact, k=5.0):
    """The mean of the rows of ``estimates`` is within k standard errors of
    ``exact``."""
    mean = estimates.mean(0)
    error = estimates.std(0) / math.sqrt(len(estimates))
    return bool(((mean - exact).abs() < k * error).all())


def synthetic_data(n=4000, d=10, seed=0):
    """Gaussian data with clearly separated variances along random orthogonal
    axes."""
    g = torch.Generator().manual_seed(seed)
    axes, _ = torch.linalg.qr(
        torch.randn(d, d, generator=g, dtype=torch.float64)
    )
    scales = torch.linspace(3.0, 0.3, d, dtype=torch.float64)
    z = torch.randn(n, d, generator=g, dtype=torch.float64) * scales
    return z @ axes.T + 0.5


def mixture_log_density(x, weights, means, stds):
    return torch.logsumexp(
        weights.log()[:, None]
        + D.Normal(means[:, None], stds[:, None]).log_prob(x),
        0,
    )


# --- Autoencoders


def test_gaussian_negative_log_likelihood_is_scaled_squared_error():
    """-log N(x; x_hat, s^2 I) = ||x - x_hat||^2 / (2 s^2) + d/2 log(2 pi s^2)."""
    x = torch.rand(20, 784, generator=GEN, dtype=torch.float64)
    x_hat = torch.rand(20, 784, generator=GEN, dtype=torch.float64)
    for sigma in (0.05, 0.3, 2.0):
        expected = -torch.distributions.Normal(x_hat, sigma).log_prob(x).sum(1)
        formula = ((x - x_hat) ** 2).sum(1) / (
            2 * sigma**2
        ) + 784 / 2 * math.log(2 * math.pi * sigma**2)
        torch.testing.assert_close(formula, expected)


def test_bernoulli_decoder_log_likelihood_is_minus_the_summed_cross_entropy():
    g = torch.Generator().manual_seed(20)
    x = (torch.rand(5, 30, generator=g) > 0.5).double()
    probabilities = torch.rand(5, 30, generator=g) * 0.98 + 0.01
    expected = D.Bernoulli(probs=probabilities).log_prob(x).sum(-1)
    bce = F.binary_cross_entropy(probabilities, x, reduction="none").sum(-1)
    torch.testing.assert_close(-bce, expected)
    torch.testing.assert_close(
        log_bernoulli(x, probabilities.logit()).sum(-1), expected
    )


def test_linear_autoencoder_loss_depends_on_the_data_only_through_the_covariance():
    """mean ||x_c - A x_c||^2 = tr C - 2 tr(A C) + tr(A C A^T)."""
    x = synthetic_data()
    xc = x - x.mean(0)
    cov = xc.T @ xc / len(x)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 10, generator=g, dtype=torch.float64)
    b = torch.randn(10, 3, generator=g, dtype=torch.float64)
    product = b @ a
    direct = ((xc - xc @ product.T) ** 2).sum(1).mean()
    formula = (
        torch.trace(cov)
        - 2 * torch.trace(product @ cov)
        + torch.trace(product @ cov @ product.T)
    )
    torch.testing.assert_close(direct, formula)


# --- Regularized autoencoders


def test_l1_penalty_of_nonnegative_codes_depends_on_unit_means_only():
    z = torch.rand(64, 5, generator=GEN)
    lam = 0.7
    batch_mean = (lam * z.abs().sum(dim=1)).mean()
    torch.testing.assert_close(batch_mean, lam * z.mean(dim=0).sum())


def test_tweedie_formula_on_the_circle():
    """E[x | x~] - x~ = σ² ∇ log p_σ(x~) for x uniform on the unit circle and
    x~ = x + σ ε: the denoising field the chapter compares its network with."""
    sigma = 0.3
    angles = torch.arange(4000) * (2 * math.pi / 4000)
    circle = torch.stack([angles.cos(), angles.sin()], dim=1)
    x = (torch.rand(50, 2, generator=GEN) * 4 - 2).requires_grad_(True)
    log_w = -((x[:, None] - circle[None]) ** 2).sum(-1) / (2 * sigma**2)
    log_p = torch.logsumexp(log_w, dim=1)
    score = torch.autograd.grad(log_p.sum(), x)[0]
    posterior_mean = torch.softmax(log_w, dim=1) @ circle
    torch.testing.assert_close(
        posterior_mean - x.detach(), sigma**2 * score.detach()
    )


def test_tweedie_formula_for_a_gaussian_in_closed_form():
    """x ~ N(0, s²), x~ = x + σ ε: E[x | x~] = s²/(s² + σ²) x~ and
    p_σ = N(0, s² + σ²), so both sides equal -σ² x~ / (s² + σ²)."""
    s2, sigma2 = 2.0, 0.5
    x_tilde = torch.linspace(-3, 3, 13, dtype=torch.float64).requires_grad_(
        True
    )
    log_p = -(x_tilde**2) / (2 * (s2 + sigma2))
    score = torch.autograd.grad(log_p.sum(), x_tilde)[0]
    posterior_mean = s2 / (s2 + sigma2) * x_tilde.detach()
    torch.testing.assert_close(
        posterior_mean - x_tilde.detach(), sigma2 * score
    )


# --- The Kullback-Leibler divergence


def test_multivariate_log_density_formula_matches_scipy():
    """log N(x; μ, Σ) = -½ (k log 2π + log det Σ + (x-μ)ᵀ Σ⁻¹ (x-μ))."""
    k = 4
    mu, cov, x = randn(k), random_spd(k), randn(10, k)
    diff = x - mu
    maha = (diff @ torch.linalg.inv(cov) * diff).sum(-1)
    formula = -0.5 * (k * math.log(2 * math.pi) + torch.logdet(cov) + maha)
    expected = stats.multivariate_normal(mu.numpy(), cov.numpy()).logpdf(
        x.numpy()
    )
    np.testing.assert_allclose(formula.numpy(), expected)


def test_expected_quadratic_form_is_trace_plus_shift():
    """E[(x-m)ᵀA(x-m)] = tr(AΣ) + (μ-m)ᵀA(μ-m) for x ~ N(μ, Σ)."""
    k = 4
    mu, m, cov, a = randn(k), randn(k), random_spd(k), random_spd(k)
    x = mu + randn(300_000, k) @ torch.linalg.cholesky(cov).T
    quad = ((x - m) @ a * (x - m)).sum(-1)
    exact = torch.trace(a @ cov) + (mu - m) @ a @ (mu - m)
    assert z_score(mean_and_standard_error(quad), exact) < 4


def test_the_plus_log_det_slip_gives_negative_divergences():
    mu, logvar = torch.zeros(50), torch.linspace(-6, 3, 50)
    correct = gaussian_kl_standard(mu, logvar)
    slip = 0.5 * (logvar.exp() + mu**2 - 1 + logvar)
    assert (correct >= 0).all()
    assert (slip < 0).any()
    assert slip[logvar == logvar.min()].item() < -3


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
    for start, w, mu, sd in zip(
        (-4.0, 4.0), weights, means, stds, strict=True
    ):
        params = fit(start, forward=False)
        assert abs(params[0] - mu) < 0.1 and abs(params[1].exp() - sd) < 0.1
        assert kl(params, forward=False) <= kl(
            torch.stack([mu, sd.log()]), False
        )
        assert kl(torch.stack([mu, sd.log()]), False) <= -math.log(w)


# --- The reparameterization trick


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
        stats.kstest(z.detach().numpy(), stats.expon(scale=1 / 1.7).cdf).pvalue
        > 0.01
    )
    # per-sample gradients: d(z²)/dλ = 2 z dz/dλ = -2 z²/λ
    per_sample = -2 * z.detach() ** 2 / lam.detach()
    (z**2).mean().backward()
    torch.testing.assert_close(lam.grad, per_sample.mean())
    assert within(per_sample.unsqueeze(1), torch.tensor([-4 / 1.7**3]))


def test_a_standard_normal_pushed_through_a_fixed_function_becomes_another_law():
    """F⁻¹(Φ(ε)) with ε ~ N(0, 1) has distribution F (here: Exp(1) and a Beta)."""
    eps = torch.randn(
        100_000, generator=torch.Generator().manual_seed(5)
    ).numpy()
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


def test_gumbel_max_samples_the_categorical_distribution():
    pi = torch.tensor([0.2, 0.5, 0.3])
    u = torch.rand(200_000, 3, generator=torch.Generator().manual_seed(9))
    choice = torch.argmax(torch.log(pi) - torch.log(-torch.log(u)), dim=1)
    counts = torch.bincount(choice, minlength=3).numpy()
    assert stats.chisquare(counts, pi.numpy() * len(choice)).pvalue > 0.01


# --- The variational autoencoder


def test_per_pixel_loss_is_the_per_image_loss_divided_by_784():
    """Source 001's loss, BCE averaged over batch and pixels plus KL / (batch * 784), is
    the batch mean of the per-image negative ELBO divided by 784 (for the same draw)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.bernoulli(torch.full((8, 784), 0.3), generator=gen)
    probs = torch.rand(8, 784, generator=gen) * 0.98 + 0.01
    mu, logvar = (
        torch.randn(8, 2, generator=gen),
        torch.randn(8, 2, generator=gen),
    )
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    per_pixel = F.binary_cross_entropy(probs, x) + kld / (8 * 784)
    per_image = (
        F.binary_cross_entropy(probs, x, reduction="none").sum(1)
        + D.kl_divergence(
            D.Normal(mu, torch.exp(0.5 * logvar)), D.Normal(0.0, 1.0)
        ).sum(1)
    ).mean()
    torch.testing.assert_close(784 * per_pixel, per_image)


def test_prior_mass_inside_radius_two_is_one_minus_e_to_the_minus_two():
    """|z|² of a 2-D standard normal is chi-square with 2 degrees of freedom:
    P(|z| < 2) = 1 - exp(-2), the number the chapter's 2-D latent figure uses."""
    assert stats.chi2(2).cdf(4.0) == pytest.approx(1 - math.exp(-2), rel=1e-12)


# --- The VQ-VAE


def test_kl_of_a_one_hot_posterior_from_the_uniform_prior_is_log_k():
    # the chapter: q(z|x) puts all its mass on the chosen entry; against the uniform
    # prior over K entries, KL = log K per cell whatever the entry, 49 log K per grid
    for k in (2, 16, 128):
        for chosen in (0, k - 1):
            q = torch.nn.functional.one_hot(torch.tensor(chosen), k).double()
            p = torch.full((k,), 1.0 / k, dtype=torch.float64)
            kl = torch.distributions.kl_divergence(
                torch.distributions.Categorical(probs=q),
                torch.distributions.Categorical(probs=p),
            )
            assert math.isclose(kl.item(), math.log(k), rel_tol=1e-12)
