"""The chapter "The reparameterization trick": two Monte Carlo estimators of
the gradient ∇_{μ,σ} E_{z ~ N(μ, σ²)}[f(z)], and the tiny VAE that shows what
each ELBO term does.

The chapter derives both estimators and compares their variances:

- the score-function (REINFORCE) estimator f(z) ∇ log q(z), which needs only
  values of f;
- the pathwise (reparameterized) estimator ∇_z f(z) ∂z/∂(μ, σ) with z = μ + σ
  ε, which needs f to be differentiable and is usually far less noisy.

Both take a diagonal Gaussian (μ and σ of shape (D,)) and a function f mapping
a batch of points (n, D) to n values, and return n single-sample estimates of
each gradient, shape (n, D): their mean is the n-sample estimate and their
spread measures its variance.
"""

from __future__ import annotations

import torch
from torch import nn

from vaecourse.chapters.kl import gaussian_kl_standard
from vaecourse.prob import log_bernoulli


def draw(mu: torch.Tensor, sigma: torch.Tensor, n: int, generator=None):
    """Check a diagonal Gaussian and draw n samples: (ε, z = μ + σ ε),
    each of shape (n, D)."""
    if mu.dim() != 1 or sigma.shape != mu.shape:
        raise ValueError(
            "mu and sigma must be vectors of the same shape (D,), got "
            f"{tuple(mu.shape)} and {tuple(sigma.shape)}"
        )
    if not (sigma > 0).all():
        raise ValueError("sigma must be positive (it is a standard deviation)")
    if n < 1:
        raise ValueError(
            f"the number of samples n must be at least 1, got {n}"
        )
    eps = torch.randn((n, *mu.shape), generator=generator, dtype=mu.dtype)
    return eps, mu.detach() + sigma.detach() * eps


def values(f, z: torch.Tensor) -> torch.Tensor:
    """f at a batch of points z (n, D), checked to be n values (one per
    point)."""
    out = f(z)
    if out.shape != z.shape[:1]:
        raise ValueError(
            f"f must map a batch of points (n, D) to n values, got shape "
            f"{tuple(out.shape)} for input {tuple(z.shape)}"
        )
    return out


def score_function_gradient(f, mu, sigma, n: int, generator=None):
    """n single-sample score-function estimates of (∇_μ, ∇_σ) E_{N(μ,
    σ²)}[f(z)].

    Each is f(z) ∇ log q(z) with ∂ log q/∂μ = (z - μ)/σ² = ε/σ and ∂ log q/∂σ =
    ((z - μ)² - σ²)/σ³ = (ε² - 1)/σ, for z ~ N(μ, σ²). f is only evaluated.
    """
    eps, z = draw(mu, sigma, n, generator)
    with torch.no_grad():
        f_z = values(f, z).unsqueeze(1)
    sigma = sigma.detach()
    return f_z * eps / sigma, f_z * (eps**2 - 1) / sigma


def pathwise_gradient(f, mu, sigma, n: int, generator=None):
    """n single-sample pathwise estimates of (∇_μ, ∇_σ) E_{N(μ, σ²)}[f(z)].

    With z = μ + σ ε, ε ~ N(0, I): ∂f/∂μ = ∇f(z) and ∂f/∂σ = ∇f(z) ⊙ ε. ∇f(z)
    comes from autograd, one sample at a time (the gradient of the sum of
    independent values).
    """
    eps, z = draw(mu, sigma, n, generator)
    z.requires_grad_(True)
    (grad_z,) = torch.autograd.grad(values(f, z).sum(), z)
    return grad_z, grad_z * eps


def exact_variances(mu, sigma, baseline=0.0):
    """The exact variances of single-sample gradient estimates for
    f(z) = Σ_j exp(z_j) under q = N(μ, diag σ²): a dict with "score function"
    (with the constant ``baseline`` c subtracted from f) and "pathwise", each
    a tensor (2D,) ordered as (∂/∂μ, ∂/∂σ).

    From E[e^{c·ε} ε_j²] = e^{|c|²/2} (1 + c_j²) and E[e^{c·ε} (ε_j² - 1)²] =
    e^{|c|²/2} (c_j⁴ + 4 c_j² + 2) for ε ~ N(0, I), applied to the D² terms
    of f² and the D terms of f.
    """
    mu, sigma = torch.as_tensor(mu), torch.as_tensor(sigma)
    if mu.dim() != 1 or sigma.shape != mu.shape or not (sigma > 0).all():
        raise ValueError(
            "mu and sigma must be vectors of the same shape (D,), sigma > 0"
        )
    D = len(mu)
    eye = torch.eye(D, dtype=mu.dtype)
    # pair (a, b) of f² = Σ_ab e^{z_a + z_b}: c = σ_a e_a + σ_b e_b
    c = sigma[:, None, None] * eye[:, None, :] + (
        sigma[None, :, None] * eye[None, :, :]
    )  # (a, b, j)
    pair = torch.exp(mu[:, None] + mu[None, :] + (c**2).sum(-1) / 2)
    single = torch.exp(mu + sigma**2 / 2)  # E[e^{z_a}]
    s = sigma * eye  # (a, j): c of the single term e^{z_a}
    mean_mu, mean_sigma = single, sigma * single
    f2_sq = (pair[..., None] * (1 + c**2)).sum((0, 1))
    f_sq = (single[:, None] * (1 + s**2)).sum(0)
    f2_4 = (pair[..., None] * (c**4 + 4 * c**2 + 2)).sum((0, 1))
    f_4 = (single[:, None] * (s**4 + 4 * s**2 + 2)).sum(0)
    C = baseline
    score_mu = (f2_sq - 2 * C * f_sq + C**2) / sigma**2 - mean_mu**2
    score_sigma = (f2_4 - 2 * C * f_4 + 2 * C**2) / sigma**2 - mean_sigma**2
    path_mu = torch.exp(2 * mu + 2 * sigma**2) - mean_mu**2
    path_sigma = (
        torch.exp(2 * mu + 2 * sigma**2) * (1 + 4 * sigma**2) - mean_sigma**2
    )
    return {
        "score function": torch.cat([score_mu, score_sigma]),
        "pathwise": torch.cat([path_mu, path_sigma]),
    }


class TinyVAE(nn.Module):
    """A VAE small enough to train in seconds: 784 -> hidden -> (mu, log var)
    of a ``latent``-dimensional code, and back to 784 logits. ``forward``
    returns mu, logvar and a reparameterized sample z."""

    def __init__(self, hidden=256, latent=2):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, 784)
        )

    def forward(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        # reparameterized
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return mu, logvar, z


def objective_loss(model, batch, objective):
    """The two terms of the negative ELBO, and the loss of ``objective``:
    "reconstruction only", "KL only" (the encoder gets the gradient of the KL
    term alone) or "both"."""
    (x,) = batch
    mu, logvar, z = model(x)
    if objective == "KL only":
        z = z.detach()  # the encoder sees only the KL term
    reconstruction = -log_bernoulli(x, model.decoder(z)).sum(-1).mean()
    kl = gaussian_kl_standard(mu, logvar).sum(-1).mean()
    loss = (
        reconstruction
        if objective == "reconstruction only"
        else reconstruction + kl
    )
    return {"loss": loss, "reconstruction": reconstruction, "kl": kl}
