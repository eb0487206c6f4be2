"""Checks for the exercises of the chapter "The reparameterization trick"."""

from __future__ import annotations

import torch

from vaecourse.checks import Exercise, Mistake

_gen = torch.Generator().manual_seed(0)
f64 = torch.float64


def _normal(*shape):
    return torch.randn(*shape, generator=_gen, dtype=f64)


def _positive(*shape):
    return 0.3 + 1.5 * torch.rand(*shape, generator=_gen, dtype=f64)


def _uniform(*shape):
    """Uniform draws kept away from 0 and 1, as a generator gives them."""
    return 0.01 + 0.98 * torch.rand(*shape, generator=_gen, dtype=f64)


# 1. The score-function estimator with a leave-one-out baseline ---------------


def _loo_baseline(f_z):
    n = f_z.shape[0]
    return (f_z.sum(0) - f_z) / (n - 1)


def _score_gradient(f_z, eps, sigma, baseline):
    centred = (f_z - baseline).unsqueeze(-1)
    grad_mu = (centred * eps / sigma).mean(0)
    grad_sigma = (centred * (eps**2 - 1) / sigma).mean(0)
    return grad_mu, grad_sigma


def _loo_score(f_z, eps, sigma):
    return _score_gradient(f_z, eps, sigma, _loo_baseline(f_z))


def _loo_score_mu_over_var(f_z, eps, sigma):
    centred = (f_z - _loo_baseline(f_z)).unsqueeze(-1)
    grad_mu = (centred * eps / sigma**2).mean(0)
    grad_sigma = (centred * (eps**2 - 1) / sigma).mean(0)
    return grad_mu, grad_sigma


def _loo_score_eps_for_difference(f_z, eps, sigma):
    # ((z - μ)² - σ²)/σ³ with ε written where z - μ belongs
    centred = (f_z - _loo_baseline(f_z)).unsqueeze(-1)
    grad_mu = (centred * eps / sigma).mean(0)
    grad_sigma = (centred * (eps**2 - sigma**2) / sigma**3).mean(0)
    return grad_mu, grad_sigma


def _loo_score_summed(f_z, eps, sigma):
    grad_mu, grad_sigma = _loo_score(f_z, eps, sigma)
    return grad_mu * len(f_z), grad_sigma * len(f_z)


loo_score_gradient = Exercise(
    name="loo_score_gradient",
    question="The score-function gradient estimate for a diagonal Gaussian, "
    "with each sample's baseline the mean of f over the other samples.",
    reference=_loo_score,
    cases=[
        (_normal(6), _normal(6, 3), _positive(3)),
        (_normal(2), _normal(2, 1), torch.tensor([0.5], dtype=f64)),
        (torch.full((5,), 3.0, dtype=f64), _normal(5, 2), _positive(2)),
        (
            torch.tensor([1.0, 4.0, 0.0, -2.0], dtype=f64),
            _normal(4, 2),
            torch.tensor([2.0, 0.25], dtype=f64),
        ),
    ],
    labels=[
        "n = 6 samples in D = 3 dimensions, random f values",
        "n = 2 samples in one dimension, sigma = 0.5",
        "n = 5 samples, f the same (3) for every sample",
        "n = 4 samples, f = [1, 4, 0, -2], sigma = [2, 0.25]",
    ],
    mistakes=[
        Mistake(
            "the sample in its own baseline",
            lambda f_z, eps, sigma: _score_gradient(
                f_z, eps, sigma, f_z.mean(0)
            ),
            "The baseline of sample i must not contain f(z_i): with the mean "
            "of all n values the estimate is biased (by a factor (n - 1)/n). "
            "Average f over the other n - 1 samples.",
        ),
        Mistake(
            "no baseline",
            lambda f_z, eps, sigma: _score_gradient(f_z, eps, sigma, 0.0),
            "Subtract the baseline: each f(z_i) minus the mean of f over the "
            "other samples, before multiplying by the score.",
        ),
        Mistake(
            "score for mu divided by the variance",
            _loo_score_mu_over_var,
            "∂ log q/∂μ = (z - μ)/σ², and z - μ = σ ε, so in terms of ε it "
            "is ε/σ, not ε/σ².",
        ),
        Mistake(
            "ε in place of z - μ in the score for sigma",
            _loo_score_eps_for_difference,
            "∂ log q/∂σ = ((z - μ)² - σ²)/σ³, and z - μ = σ ε, so in terms "
            "of ε it is (ε² - 1)/σ: did you write ε where z - μ belongs?",
        ),
        Mistake(
            "summed over the samples",
            _loo_score_summed,
            "Average the n single-sample estimates, do not sum them: the "
            "estimate must not grow with n.",
        ),
    ],
    fallback="Compute the baselines b_i first and check that the f_i - b_i "
    "sum to 0 over the samples; then write each score in terms of ε "
    "(z - μ = σ ε), multiply, and average over the n samples.",
)


# 2. The pathwise gradient through a Cholesky factor --------------------------


def _cholesky_pathwise(grad_z, eps):
    outer = grad_z.unsqueeze(-1) * eps.unsqueeze(-2)  # (n, D, D): g_a ε_b
    return torch.tril(outer.mean(0))


def _cholesky_transposed(grad_z, eps):
    outer = eps.unsqueeze(-1) * grad_z.unsqueeze(-2)
    return torch.tril(outer.mean(0))


def _cholesky_full(grad_z, eps):
    outer = grad_z.unsqueeze(-1) * eps.unsqueeze(-2)
    return outer.mean(0)


def _cholesky_diagonal(grad_z, eps):
    return torch.diag_embed((grad_z * eps).mean(0))


def _cholesky_summed(grad_z, eps):
    outer = grad_z.unsqueeze(-1) * eps.unsqueeze(-2)
    return torch.tril(outer.sum(0))


cholesky_pathwise_gradient = Exercise(
    name="cholesky_pathwise_gradient",
    question="The pathwise gradient with respect to the Cholesky factor L of "
    "a full-covariance Gaussian, z = μ + L ε, from ∇f(z) and ε.",
    reference=_cholesky_pathwise,
    cases=[
        (_normal(5, 3), _normal(5, 3)),
        (_normal(1, 2), _normal(1, 2)),
        (_normal(4, 1), _normal(4, 1)),
        (
            torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=f64),
            torch.tensor([[0.5, -1.0], [2.0, 1.0]], dtype=f64),
        ),
    ],
    labels=[
        "n = 5 samples in D = 3 dimensions",
        "one sample in D = 2 dimensions",
        "n = 4 samples in one dimension",
        "grad_z = [[1, 2], [0, -1]], eps = [[0.5, -1], [2, 1]]",
    ],
    mistakes=[
        Mistake(
            "the outer product transposed",
            _cholesky_transposed,
            "z_a = μ_a + Σ_b L_ab ε_b, so ∂f/∂L_ab = (∂f/∂z_a) ε_b: the "
            "gradient of f goes in the rows, ε in the columns.",
        ),
        Mistake(
            "entries above the diagonal kept",
            _cholesky_full,
            "L is lower triangular: its entries above the diagonal are not "
            "parameters (they are fixed at 0), so their gradient is 0.",
        ),
        Mistake(
            "the diagonal Gaussian's formula",
            _cholesky_diagonal,
            "With a full L, every entry L_ab with a ≥ b gets a gradient "
            "(∂f/∂z_a) ε_b, not only the diagonal: ∇f ⊙ ε is the diagonal "
            "Gaussian's special case.",
        ),
        Mistake(
            "summed over the samples",
            _cholesky_summed,
            "Average over the n samples, do not sum: each row is one "
            "single-sample estimate.",
        ),
    ],
    fallback="Differentiate f(μ + L ε) with respect to one entry L_ab for a "
    "single sample (the chain rule through z_a), then average over the "
    "samples; the entries above the diagonal are not parameters of L.",
)


# 3. A Gumbel-softmax (Concrete) sample ---------------------------------------


def _gumbel_softmax(logits, u, tau):
    g = -torch.log(-torch.log(u))
    return torch.softmax((logits + g) / tau, -1)


def _gumbel_softmax_unstable(logits, u, tau):
    e = torch.exp((logits - torch.log(-torch.log(u))) / tau)
    return e / e.sum(-1, keepdim=True)


_u3 = _uniform(3)
gumbel_softmax_sample = Exercise(
    name="gumbel_softmax_sample",
    question="A Gumbel-softmax (Concrete) sample from logits, uniform noise "
    "and a temperature.",
    reference=_gumbel_softmax,
    cases=[
        (_normal(4), _uniform(4), 0.5),
        (_normal(2, 3, 5), _uniform(2, 3, 5), 2.0),
        (
            torch.tensor([5.0, 0.0, -5.0], dtype=f64),
            _u3,
            0.001,
        ),
        (torch.tensor([1.0, 2.0, 3.0], dtype=f64), _u3, 1.0),
    ],
    labels=[
        "4 categories, tau = 0.5",
        "logits of shape (2, 3, 5), tau = 2",
        "logits [5, 0, -5], tau = 0.001 (almost one-hot)",
        "logits [1, 2, 3], tau = 1",
    ],
    mistakes=[
        Mistake(
            "exponential noise -log u",
            lambda logits, u, tau: torch.softmax(
                (logits - torch.log(u)) / tau, -1
            ),
            "-log u is exponential noise; Gumbel noise is g = -log(-log u).",
        ),
        Mistake(
            "the Gumbel noise's sign flipped",
            lambda logits, u, tau: torch.softmax(
                (logits + torch.log(-torch.log(u))) / tau, -1
            ),
            "Check the sign of the noise: g = -log(-log u), which is added to "
            "the logits.",
        ),
        Mistake(
            "multiplied by the temperature",
            lambda logits, u, tau: _gumbel_softmax(logits, u, 1 / tau),
            "Divide by the temperature τ: a small τ must make the sample "
            "close to one-hot.",
        ),
        Mistake(
            "no noise",
            lambda logits, u, tau: torch.softmax(logits / tau, -1),
            "Add the Gumbel noise g = -log(-log u) to the logits: without it "
            "the output is the same for every u, not a sample.",
        ),
        Mistake(
            "exp overflows at a small temperature",
            _gumbel_softmax_unstable,
            "At a small temperature (logits + g)/τ is in the thousands and "
            "exp overflows, giving nan: torch.softmax subtracts the largest "
            "value first.",
        ),
        Mistake(
            "softmax over the first dimension",
            lambda logits, u, tau: torch.softmax(
                (logits - torch.log(-torch.log(u))) / tau, 0
            ),
            "The categories are the last dimension: take the softmax over "
            "dim=-1, so that each sample sums to 1 over its categories.",
        ),
    ],
    fallback="Check your Gumbel noise and the temperature on a case with "
    "τ = 1 that you can work out by hand, then make sure a small τ cannot "
    "overflow and that the categories run along the last dimension.",
)
