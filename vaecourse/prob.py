"""Log-densities and bounds that every chapter from the ELBO on uses.

Everything works elementwise on tensors and broadcasts, so a caller sums over
the dimensions it means (for example ``.sum(-1)`` over latent units).
Logarithms are natural: results are in nats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def log_normal(
    x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """log N(x; mu, var) per dimension: -½ (log 2π + log var + (x -
    mu)²/var)."""
    return -0.5 * (LOG_2PI + logvar + (x - mu) ** 2 * torch.exp(-logvar))


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, 1) per dimension: -½ (log 2π + z²)."""
    return -0.5 * (LOG_2PI + z**2)


def log_bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log Ber(x; sigmoid(logits)) per pixel = -binary cross-entropy.

    Takes logits, not probabilities, so a confident decoder cannot produce log
    0. ``x`` and ``logits`` broadcast (e.g. images (B, d) against logits of k
    samples (k, B, d)).
    """
    logits, x = torch.broadcast_tensors(
        logits, torch.as_tensor(x, dtype=logits.dtype)
    )
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none")


def elbo_from_log_weights(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The Monte Carlo ELBO: the mean of log w = log p(x, z) - log q(z|x), z ~
    q."""
    return log_w.mean(dim)


def iw_bound(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The importance-weighted bound log (1/k) Σ w_i over ``dim`` (Burda et
    al.).

    With k = 1 it is the ELBO; it rises towards log p(x) as k grows, so with
    many samples it is the standard estimate of a VAE's log-likelihood. Uses
    logsumexp, because the weights themselves underflow (log w is about -90
    nats on MNIST).
    """
    k = log_w.shape[dim]
    return torch.logsumexp(log_w, dim) - math.log(k)
