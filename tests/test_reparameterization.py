"""Tests of vaecourse.chapters.reparameterization: the two gradient estimators against
exact gradients (the score has mean zero, autograd through z = μ + σ ε gives the pathwise
gradient), and the tiny VAE with the three objectives the chapter trains it on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D

from vaecourse.chapters.kl import gaussian_kl_standard
from vaecourse.chapters.reparameterization import (
    TinyVAE,
    exact_variances,
    objective_loss,
    pathwise_gradient,
    score_function_gradient,
)
from vaecourse.prob import log_normal, log_standard_normal

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
@pytest.mark.parametrize(
    "estimator", [score_function_gradient, pathwise_gradient]
)
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
    score = torch.cat(
        score_function_gradient(f, MU, SIGMA, 100_000, generator=g), 1
    )
    path = torch.cat(pathwise_gradient(f, MU, SIGMA, 100_000, generator=g), 1)
    assert (path.var(0) < score.var(0)).all()


def test_score_has_mean_zero_so_a_constant_shift_keeps_the_estimator_unbiased():
    g = torch.Generator().manual_seed(2)
    score_mu, score_sigma = score_function_gradient(
        lambda z: torch.ones(len(z)), MU, SIGMA, 400_000, generator=g
    )
    assert within(score_mu, torch.zeros(3)) and within(
        score_sigma, torch.zeros(3)
    )


def test_pathwise_equals_autograd_through_the_reparameterization():
    """Autograd of f(μ + σ ε) w.r.t. μ and σ is the analytic pathwise gradient
    (∇f(z), ∇f(z) ⊙ ε): for f = Σ z², (2z, 2z ε)."""
    est_mu, est_sigma = pathwise_gradient(
        square, MU, SIGMA, 8, generator=torch.Generator().manual_seed(3)
    )
    eps = torch.randn(8, 3, generator=torch.Generator().manual_seed(3))
    mu, sigma = (
        MU.clone().requires_grad_(True),
        SIGMA.clone().requires_grad_(True),
    )
    z = mu + sigma * eps
    square(z).mean().backward()
    torch.testing.assert_close(mu.grad, est_mu.mean(0))
    torch.testing.assert_close(sigma.grad, est_sigma.mean(0))
    torch.testing.assert_close(est_mu, 2 * z.detach())
    torch.testing.assert_close(est_sigma, 2 * z.detach() * eps)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mu": torch.zeros(2, 2), "sigma": torch.ones(2, 2)}, "vectors"),
        ({"mu": torch.zeros(2), "sigma": torch.ones(3)}, "same shape"),
        (
            {"mu": torch.zeros(2), "sigma": torch.tensor([1.0, 0.0])},
            "positive",
        ),
        ({"mu": torch.zeros(2), "sigma": torch.ones(2), "n": 0}, "at least 1"),
        (
            {"mu": torch.zeros(2), "sigma": torch.ones(2), "f": lambda z: z},
            "n values",
        ),
    ],
)
@pytest.mark.parametrize(
    "estimator", [score_function_gradient, pathwise_gradient]
)
def test_bad_input_is_rejected_with_a_clear_message(
    estimator, kwargs, message
):
    arguments = {"f": square, "n": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        estimator(**arguments)


def test_gradient_of_the_kl_term_closed_form_and_pathwise():
    """∂/∂μ KL(N(μ, σ²) ‖ N(0, 1)) = μ and ∂/∂σ = σ - 1/σ, from the closed form by autograd
    and, on average, from the pathwise estimate of E_q[log q(z) - log p(z)]."""
    mu = torch.tensor(1.5, requires_grad=True)
    sigma = torch.tensor(0.5, requires_grad=True)
    grads = torch.autograd.grad(
        gaussian_kl_standard(mu, 2 * torch.log(sigma)), (mu, sigma)
    )
    assert grads[0].item() == pytest.approx(1.5) and grads[
        1
    ].item() == pytest.approx(-1.5)
    n = 200_000
    mu_n = torch.full((n,), 1.5, requires_grad=True)
    sigma_n = torch.full((n,), 0.5, requires_grad=True)
    z = mu_n + sigma_n * torch.randn(
        n, generator=torch.Generator().manual_seed(8)
    )
    single = log_normal(z, mu_n, 2 * torch.log(sigma_n)) - log_standard_normal(
        z
    )
    g_mu, g_sigma = torch.autograd.grad(single.sum(), (mu_n, sigma_n))
    assert within(g_mu.unsqueeze(1), torch.tensor([1.5]))
    assert within(g_sigma.unsqueeze(1), torch.tensor([-1.5]))


# --- the tiny VAE and its three objectives ----------------------------------------------


def tiny_vae_and_images(seed=0):
    torch.manual_seed(seed)
    model = TinyVAE(hidden=16, latent=2)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.bernoulli(
        torch.full((8, 784), 0.3, dtype=torch.float64), generator=gen
    )
    return model, x


def test_tiny_vae_returns_the_posterior_and_a_reparameterized_sample():
    model, x = tiny_vae_and_images()
    torch.manual_seed(5)
    mu, logvar, z = model(x)
    assert mu.shape == logvar.shape == z.shape == (8, 2)
    torch.manual_seed(5)
    model.encoder(x)  # the same network, no draw: the noise is the next one
    eps = torch.randn(8, 2)
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * eps)
    # z is a differentiable function of the encoder's weights
    (grad,) = torch.autograd.grad(z.sum(), model.encoder[0].weight)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize(
    "objective", ["reconstruction only", "KL only", "both"]
)
def test_objective_loss_terms_match_independent_formulas(objective):
    model, x = tiny_vae_and_images()
    torch.manual_seed(3)
    terms = objective_loss(model, (x,), objective)
    torch.manual_seed(3)
    mu, logvar, z = model(x)
    bce = F.binary_cross_entropy_with_logits(
        model.decoder(z), x, reduction="none"
    )
    torch.testing.assert_close(terms["reconstruction"], bce.sum(1).mean())
    q = D.Normal(mu, torch.exp(0.5 * logvar))
    kl = D.kl_divergence(q, D.Normal(0.0, 1.0)).sum(1).mean()
    torch.testing.assert_close(terms["kl"], kl)
    expected = {
        "reconstruction only": terms["reconstruction"],
        "KL only": terms["reconstruction"] + terms["kl"],
        "both": terms["reconstruction"] + terms["kl"],
    }[objective]
    torch.testing.assert_close(terms["loss"], expected)


def encoder_and_decoder_gradients(model, loss):
    encoder = torch.autograd.grad(
        loss, list(model.encoder.parameters()), retain_graph=True
    )
    decoder = torch.autograd.grad(
        loss,
        list(model.decoder.parameters()),
        retain_graph=True,
        allow_unused=True,
    )
    return torch.cat([g.flatten() for g in encoder]), decoder


def test_kl_only_gives_the_encoder_no_reconstruction_gradient():
    """With "KL only" the encoder's gradient is that of the KL term alone, while the
    decoder still learns to reconstruct; with "both" the encoder also gets the
    reconstruction's gradient."""
    model, x = tiny_vae_and_images()
    torch.manual_seed(4)
    terms = objective_loss(model, (x,), "KL only")
    encoder, decoder = encoder_and_decoder_gradients(model, terms["loss"])
    kl_only, _ = encoder_and_decoder_gradients(model, terms["kl"])
    torch.testing.assert_close(encoder, kl_only)
    assert all(g is not None and g.abs().sum() > 0 for g in decoder)
    torch.manual_seed(4)
    both = objective_loss(model, (x,), "both")
    encoder_both, _ = encoder_and_decoder_gradients(model, both["loss"])
    assert (encoder_both - kl_only).abs().max() > 1e-3


def test_reconstruction_only_gives_the_encoder_no_kl_gradient():
    model, x = tiny_vae_and_images()
    torch.manual_seed(6)
    terms = objective_loss(model, (x,), "reconstruction only")
    encoder, _ = encoder_and_decoder_gradients(model, terms["loss"])
    reconstruction, _ = encoder_and_decoder_gradients(
        model, terms["reconstruction"]
    )
    torch.testing.assert_close(encoder, reconstruction)
    kl, _ = encoder_and_decoder_gradients(model, terms["kl"])
    assert kl.abs().max() > 1e-3  # so leaving it out is visible


@pytest.mark.parametrize("baseline", [0.0, 3.0])
def test_exact_variances_match_gauss_hermite_quadrature(baseline):
    # two dimensions, 80 x 80 Gauss-Hermite nodes: the variance of each
    # single-sample estimate, computed from its own formula at the nodes
    mu = torch.tensor([0.3, -0.7], dtype=torch.float64)
    sigma = torch.tensor([0.9, 0.4], dtype=torch.float64)
    nodes, weights = map(
        torch.from_numpy, np.polynomial.hermite_e.hermegauss(80)
    )
    weights = weights / weights.sum()
    e1, e2 = torch.meshgrid(nodes, nodes, indexing="ij")
    eps = torch.stack([e1.ravel(), e2.ravel()], 1)
    w = (weights[:, None] * weights[None, :]).ravel()
    z = mu + sigma * eps
    f = torch.exp(z).sum(-1, keepdim=True) - baseline
    score = torch.cat([f * eps / sigma, f * (eps**2 - 1) / sigma], 1)
    path = torch.cat([torch.exp(z), torch.exp(z) * eps], 1)

    def variance(g):
        mean = (w[:, None] * g).sum(0)
        return (w[:, None] * (g - mean) ** 2).sum(0)

    exact = exact_variances(mu, sigma, baseline)
    assert torch.allclose(exact["score function"], variance(score), rtol=1e-8)
    assert torch.allclose(exact["pathwise"], variance(path), rtol=1e-8)


def test_exact_variances_agree_with_the_sampled_variances():
    # small σ: light tails, so the sample variance is accurate to a few %
    mu = torch.tensor([0.2, -0.4, 0.1], dtype=torch.float64)
    sigma = torch.tensor([0.3, 0.2, 0.25], dtype=torch.float64)
    exact = exact_variances(mu, sigma)
    generator = torch.Generator().manual_seed(0)
    for name, estimator in [
        ("score function", score_function_gradient),
        ("pathwise", pathwise_gradient),
    ]:
        g_mu, g_sigma = estimator(exponential, mu, sigma, 200_000, generator)
        sampled = torch.cat([g_mu, g_sigma], 1).var(0)
        assert torch.allclose(sampled, exact[name], rtol=0.05), name


def test_score_function_variance_grows_quadratically_with_the_dimension():
    # the reviewer's closed form for q = N(0, I_D), f = Σ e^{z_j}:
    # [e²(D + 4) + e((D - 1)(D - 2) + 4(D - 1) - 1)] / (e(e - 1))
    e = math.e
    for dim in [1, 4, 64]:
        v = exact_variances(
            torch.zeros(dim, dtype=torch.float64),
            torch.ones(dim, dtype=torch.float64),
        )
        ratio = v["score function"][0] / v["pathwise"][0]
        formula = (
            e**2 * (dim + 4) + e * ((dim - 1) * (dim - 2) + 4 * (dim - 1) - 1)
        ) / (e * (e - 1))
        assert math.isclose(ratio, formula, rel_tol=1e-10)
