"""The chapter "The Kullback-Leibler divergence": the divergences it derives
and checks.

The chapter writes each of these out (a test keeps the copies identical); later
chapters import them from here. Everything works elementwise on tensors and
broadcasts, so a caller sums over the dimensions it means (for example
``.sum(-1)`` over latent units). Logarithms are natural: results are in nats.
"""

from __future__ import annotations

import math

import torch


def bernoulli_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(Ber(p) ‖ Ber(q)) = p log(p/q) + (1-p) log((1-p)/(1-q)), elementwise.

    ``xlogy`` gives the convention 0·log 0 = 0, so p = 0 or p = 1 is fine; a q
    of exactly 0 or 1 where p puts mass gives +inf, as the support condition
    says it must.
    """
    p, q = torch.as_tensor(p), torch.as_tensor(q)
    if ((p < 0) | (p > 1)).any() or ((q < 0) | (q > 1)).any():
        raise ValueError("bernoulli_kl: probabilities must lie in [0, 1]")
    return (
        torch.xlogy(p, p) - torch.xlogy(p, q) + torch.xlogy(1 - p, 1 - p)
    ) - torch.xlogy(1 - p, 1 - q)


def categorical_kl(
    p: torch.Tensor, q: torch.Tensor, dim: int = -1
) -> torch.Tensor:
    """KL(p ‖ q) = Σ_x p(x) log(p(x)/q(x)) between discrete distributions.

    ``p`` and ``q`` hold probabilities along ``dim`` (other dimensions
    broadcast). ``xlogy`` gives the convention 0·log 0 = 0, so an outcome p
    never produces adds nothing; an outcome with q = 0 where p > 0 gives
    +inf, as the support condition says it must.
    """
    p, q = torch.as_tensor(p), torch.as_tensor(q)
    for name, probs in (("p", p), ("q", q)):
        if (probs < 0).any():
            raise ValueError(
                f"categorical_kl: {name} has negative probabilities"
            )
        total = probs.sum(dim)
        tolerance = torch.finfo(total.dtype).eps ** 0.5
        if ((total - 1).abs() > tolerance).any():
            raise ValueError(
                f"categorical_kl: {name} must sum to 1 along dim {dim} "
                f"(sums found: {total.flatten()[:5].tolist()}); normalize it "
                f"with {name} / {name}.sum({dim}, keepdim=True)"
            )
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(dim)


def gaussian_kl(
    mu0: torch.Tensor,
    logvar0: torch.Tensor,
    mu1: torch.Tensor,
    logvar1: torch.Tensor,
) -> torch.Tensor:
    """KL(N(mu0, var0) ‖ N(mu1, var1)) per dimension, variances given as
    log-variances.

    = ½ (var0/var1 + (mu0 - mu1)²/var1 - 1 + logvar1 - logvar0). Summed over
    independent dimensions it is the KL between diagonal Gaussians.
    """
    return 0.5 * (
        torch.exp(logvar0 - logvar1)
        + (mu0 - mu1) ** 2 * torch.exp(-logvar1)
        - 1
        + logvar1
        - logvar0
    )


def gaussian_kl_standard(
    mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu, var) ‖ N(0, 1)) per dimension: ½ (var + mu² - 1 - log var).

    This is the VAE's KL term; note the minus sign in front of log var.
    """
    return 0.5 * (torch.exp(logvar) + mu**2 - 1 - logvar)


def mvn_kl(
    mu0: torch.Tensor,
    cov0: torch.Tensor,
    mu1: torch.Tensor,
    cov1: torch.Tensor,
) -> torch.Tensor:
    """KL(N(mu0, cov0) ‖ N(mu1, cov1)) for full covariance matrices (last dims
    k, k×k):

    ½ (tr(cov1⁻¹ cov0) + (mu1-mu0)ᵀ cov1⁻¹ (mu1-mu0) - k + log det cov1 - log
    det cov0). Computed through Cholesky factors, which also rejects a matrix
    that is not positive definite.
    """
    k = mu0.shape[-1]
    l0 = torch.linalg.cholesky(cov0)
    l1 = torch.linalg.cholesky(cov1)
    # cov1⁻¹ cov0 through the factors: tr(L1⁻¹ L0 (L1⁻¹ L0)ᵀ) = ‖L1⁻¹ L0‖²_F
    m = torch.linalg.solve_triangular(l1, l0, upper=False)
    trace = (m**2).sum((-2, -1))
    diff = (mu1 - mu0).unsqueeze(-1)
    maha = (torch.linalg.solve_triangular(l1, diff, upper=False) ** 2).sum(
        (-2, -1)
    )
    logdet0 = 2 * torch.log(torch.diagonal(l0, dim1=-2, dim2=-1)).sum(-1)
    logdet1 = 2 * torch.log(torch.diagonal(l1, dim1=-2, dim2=-1)).sum(-1)
    return 0.5 * (trace + maha - k + logdet1 - logdet0)


def mean_and_standard_error(
    values: torch.Tensor, dim: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample mean over ``dim`` and its standard error s/√n.

    s is the sample standard deviation. A Monte Carlo estimate means little
    without its standard error: by the central limit theorem the true mean
    lies within two standard errors of the estimate in about 95% of runs.
    """
    n = values.shape[dim]
    if n < 2:
        raise ValueError(
            "mean_and_standard_error: need at least 2 samples along dim "
            f"{dim}, got {n}"
        )
    return values.mean(dim), values.std(dim) / math.sqrt(n)


def monte_carlo_kl(
    log_p: torch.Tensor, log_q: torch.Tensor, dim: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimate KL(p ‖ q) = E_p[log p(x) - log q(x)] and its standard error.

    ``log_p`` and ``log_q`` are the two log-densities at the same samples x_i,
    drawn from p (the first argument of the KL) along ``dim``. Returns the
    pair (estimate, standard error).
    """
    return mean_and_standard_error(log_p - log_q, dim)
