"""The chapter "Latent variables and the ELBO": the linear-Gaussian
latent-variable model (probabilistic PCA, Tipping & Bishop 1999).

    z ~ N(0, I_k),    x | z ~ N(W z + b, σ² I_d)

It is the one latent-variable model of the book whose marginal likelihood and
posterior are known exactly, which is why the ELBO chapter uses it: there,
"ELBO ≤ log p(x)" and "the gap is KL(q ‖ p(z|x))" can be checked to the last
digit instead of believed.

    x ~ N(b, W Wᵀ + σ² I),    z | x ~ N(M⁻¹ Wᵀ (x - b), σ² M⁻¹),
    M = WᵀW + σ² I_k.

Everything is computed with k×k matrices (the Woodbury identity and the matrix
determinant lemma), so d = 784 costs nothing. Use float64: on MNIST,
log-densities are thousands of nats and the differences that matter are small.
"""

from __future__ import annotations

import torch

from vaecourse.prob import LOG_2PI


def check_model(W: torch.Tensor, b: torch.Tensor, sigma2) -> None:
    """Raise a clear error unless W is (d, k), b is (d,) and sigma2 > 0."""
    if W.dim() != 2:
        raise ValueError(
            f"W must be a (d, k) matrix, got shape {tuple(W.shape)}"
        )
    if b.shape != W.shape[:1]:
        raise ValueError(
            f"b must have shape ({W.shape[0]},) to match W of shape "
            f"{tuple(W.shape)}, got {tuple(b.shape)}"
        )
    if not float(torch.as_tensor(sigma2).detach()) > 0:
        raise ValueError(
            f"the noise variance sigma2 must be positive, got {sigma2}"
        )


def fit_ppca(mean, eigenvalues, eigenvectors, k: int):
    """Maximum-likelihood PPCA from PCA: the data's mean (d,) and the
    eigenvalues (d,) and eigenvectors (d, d) of its covariance (divisor n), in
    any order. Returns (W, b, sigma2).

    Tipping & Bishop's closed form: b is the mean, σ² the average of the d - k
    smallest eigenvalues (the variance the model leaves to noise), and W = U_k
    (Λ_k - σ² I)^½ with the top k eigenvectors U_k and eigenvalues Λ_k (times
    any rotation, omitted).
    """
    d = mean.shape[-1]
    if eigenvalues.shape != (d,) or eigenvectors.shape != (d, d):
        raise ValueError(
            f"eigenvalues must be ({d},) and eigenvectors ({d}, {d}) to "
            f"match mean, got {tuple(eigenvalues.shape)} and "
            f"{tuple(eigenvectors.shape)}"
        )
    if not 1 <= k < d:
        raise ValueError(
            f"the latent size k must be between 1 and {d - 1}, got {k}"
        )
    order = torch.argsort(eigenvalues, descending=True)
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    sigma2 = eigenvalues[k:].mean()
    U = eigenvectors[:, :k]
    # an eigenvector's sign is arbitrary and differs between LAPACK builds:
    # make each column's largest entry positive, the same W on every machine
    U = U * U.gather(0, U.abs().argmax(0, keepdim=True)).sign()
    W = U * (eigenvalues[:k] - sigma2).clamp_min(0).sqrt()
    return W, mean.clone(), sigma2


def log_likelihood(x, z, W, b, sigma2):
    """log p(x|z) = log N(x; W z + b, σ² I), summed over the d pixels;
    broadcasts over the leading dimensions of x (..., d) and z (..., k).

    ‖x - b - W z‖² is expanded as ‖r‖² - 2 zᵀWᵀr + zᵀWᵀW z (r = x - b), so that
    each extra z costs k² operations instead of d·k: a million prior samples
    are cheap.
    """
    check_model(W, b, sigma2)
    d = W.shape[0]
    r = x - b
    squared = (r * r).sum(-1) - 2 * (z * (r @ W)).sum(-1)
    squared = squared + ((z @ (W.T @ W)) * z).sum(-1)
    log_sigma2 = torch.log(torch.as_tensor(sigma2))
    return -0.5 * (d * (LOG_2PI + log_sigma2) + squared / sigma2)


def log_marginal(x, W, b, sigma2):
    """log p(x) = log N(x; b, W Wᵀ + σ² I) for each row of x (..., d), exactly.

    With M = WᵀW + σ² I: (W Wᵀ + σ² I)⁻¹ = (I - W M⁻¹ Wᵀ) / σ² (Woodbury) and
    log det(W Wᵀ + σ² I) = (d - k) log σ² + log det M (determinant lemma).
    """
    check_model(W, b, sigma2)
    d, k = W.shape
    L = torch.linalg.cholesky(W.T @ W + sigma2 * torch.eye(k, dtype=W.dtype))
    r = x - b
    Wr = (r @ W).unsqueeze(-1)  # Wᵀ r, as a column
    # rᵀ (W Wᵀ + σ² I)⁻¹ r = (‖r‖² - rᵀ W M⁻¹ Wᵀ r) / σ²
    quadratic = (r * r).sum(-1) - (Wr * torch.cholesky_solve(Wr, L)).sum(
        (-2, -1)
    )
    log_sigma2 = torch.log(torch.as_tensor(sigma2))
    logdet = (d - k) * log_sigma2 + 2 * torch.log(torch.diagonal(L)).sum()
    return -0.5 * (d * LOG_2PI + logdet + quadratic / sigma2)


def posterior(x, W, b, sigma2):
    """The exact posterior p(z|x) = N(mean, cov) for each row of x (..., d).

    mean = M⁻¹ Wᵀ (x - b) (one row per x) and cov = σ² M⁻¹ (the same for every
    x), with M = WᵀW + σ² I: Bayes' rule for a Gaussian prior and a
    linear-Gaussian likelihood.
    """
    check_model(W, b, sigma2)
    k = W.shape[1]
    M_inv = torch.linalg.inv(W.T @ W + sigma2 * torch.eye(k, dtype=W.dtype))
    return (x - b) @ W @ M_inv, sigma2 * M_inv


def expected_log_likelihood(x, mean, cov, W, b, sigma2):
    """E_{z ~ N(mean, cov)}[log p(x|z)] in closed form (no sampling):

    -½ [d log(2πσ²) + (‖x - b - W mean‖² + tr(W cov Wᵀ)) / σ²], because E‖r - W
    z‖² = ‖r - W mean‖² + tr(W cov Wᵀ) for z with that mean and cov.
    """
    check_model(W, b, sigma2)
    d = W.shape[0]
    residual = x - b - mean @ W.T
    spread = ((W @ cov) * W).sum((-2, -1))  # tr(W cov Wᵀ)
    log_sigma2 = torch.log(torch.as_tensor(sigma2))
    squared = (residual**2).sum(-1) + spread
    return -0.5 * (d * (LOG_2PI + log_sigma2) + squared / sigma2)
