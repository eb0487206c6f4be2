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
