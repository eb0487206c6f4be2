"""Checks for the exercises of the chapter "The β-VAE"."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vaecourse.chapters.kl import gaussian_kl_standard
from vaecourse.checks import Exercise, Mistake
from vaecourse.prob import log_bernoulli, log_normal, log_standard_normal

_gen = torch.Generator().manual_seed(0)
f64 = torch.float64


def _normal(*shape):
    return torch.randn(*shape, generator=_gen, dtype=f64)


def _uniform(*shape):
    return torch.rand(*shape, generator=_gen, dtype=f64)


def _binary(*shape):
    return (_uniform(*shape) < 0.3).to(f64)


# 1. The β-VAE's loss: distortion + β · rate ---------------------------------


def _distortion(x, logits):
    return -log_bernoulli(x, logits).sum(-1)


def _rate(mu, logvar):
    return gaussian_kl_standard(mu, logvar).sum(-1)


def _beta_loss(x, logits, mu, logvar, beta):
    return (_distortion(x, logits) + beta * _rate(mu, logvar)).mean()


def _beta_loss_through_probabilities(x, logits, mu, logvar, beta):
    p = torch.sigmoid(logits)
    distortion = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(-1)
    return (distortion + beta * _rate(mu, logvar)).mean()


def _beta_loss_bce_of_sigmoid(x, logits, mu, logvar, beta):
    distortion = F.binary_cross_entropy(
        torch.sigmoid(logits), x, reduction="none"
    ).sum(-1)  # log 0 clamped to -100
    return (distortion + beta * _rate(mu, logvar)).mean()


def _beta_loss_logvar_sign(x, logits, mu, logvar, beta):
    kl = 0.5 * (torch.exp(logvar) + mu**2 - 1 + logvar)
    return (_distortion(x, logits) + beta * kl.sum(-1)).mean()


# a confident, wrong decoder: logits of ±40 on every pixel, against the image
_x_sure = _binary(2, 784)
_logits_sure = 40 * (1 - 2 * _x_sure)
_logits_sure[:, :392] *= -1  # sure and right on the first half

beta_vae_loss = Exercise(
    name="beta_vae_loss",
    question="The β-VAE's loss D + β R of a batch, in nats per image, from "
    "the decoder's logits and the encoder's mean and log-variance.",
    reference=_beta_loss,
    cases=[
        (
            _binary(4, 784),
            2 * _normal(4, 784),
            _normal(4, 3),
            _normal(4, 3),
            4.0,
        ),
        (
            _binary(1, 784),
            2 * _normal(1, 784),
            _normal(1, 10),
            _normal(1, 10) - 2,
            0.1,
        ),
        (
            _binary(3, 784),
            2 * _normal(3, 784),
            _normal(3, 2),
            _normal(3, 2),
            1.0,
        ),
        (
            _binary(2, 784),
            _normal(2, 784),
            torch.zeros(2, 5, dtype=f64),
            torch.zeros(2, 5, dtype=f64),
            10.0,
        ),
        (_x_sure, _logits_sure, _normal(2, 4), _normal(2, 4), 2.0),
    ],
    labels=[
        "a batch of 4 images, 3 latent dimensions, β = 4",
        "one image, 10 latent dimensions, β = 0.1",
        "a batch of 3 images, β = 1 (the VAE)",
        "mu = 0 and logvar = 0 (q is the prior, rate 0), β = 10",
        "a confident decoder: logits of ±40 (half of the pixels wrong), β = 2",
    ],
    mistakes=[
        Mistake(
            "β on the distortion",
            lambda x, logits, mu, logvar, beta: (
                _rate(mu, logvar) + beta * _distortion(x, logits)
            ).mean(),
            "Did you put β on the distortion? The weight sits on the rate, "
            "the KL term: a large β makes the code expensive, not the "
            "reconstruction error.",
        ),
        Mistake(
            "distortion averaged over the pixels",
            lambda x, logits, mu, logvar, beta: (
                _distortion(x, logits) / x.shape[-1] + beta * _rate(mu, logvar)
            ).mean(),
            "Your distortion is a mean over the 784 pixels (as "
            "F.binary_cross_entropy_with_logits gives by default): sum it "
            "over the pixels of each image, so that D and R are both in nats "
            "per image.",
        ),
        Mistake(
            "summed over the batch",
            lambda x, logits, mu, logvar, beta: (
                _distortion(x, logits) + beta * _rate(mu, logvar)
            ).sum(),
            "Average over the images of the batch, do not sum: the loss is in "
            "nats per image.",
        ),
        Mistake(
            "the sign of log σ² in the KL",
            _beta_loss_logvar_sign,
            "Check the rate: KL(N(μ, σ²) ‖ N(0, 1)) = "
            "½ (σ² + μ² − 1 − log σ²) per dimension, with a minus sign in "
            "front of the log-variance.",
        ),
        Mistake(
            "the KL averaged over the latent dimensions",
            lambda x, logits, mu, logvar, beta: (
                _distortion(x, logits)
                + beta * gaussian_kl_standard(mu, logvar).mean(-1)
            ).mean(),
            "Sum the KL over the latent dimensions: the rate of the code is "
            "the sum of the rates of its dimensions.",
        ),
        Mistake(
            "the log of sigmoid probabilities",
            _beta_loss_through_probabilities,
            "For a logit of 40, sigmoid rounds to exactly 1 and log(1 − 1) = "
            "−inf: compute the distortion from the logits "
            "(vaecourse.prob.log_bernoulli, or "
            "F.binary_cross_entropy_with_logits), never from probabilities.",
        ),
        Mistake(
            "F.binary_cross_entropy on sigmoid(logits)",
            _beta_loss_bce_of_sigmoid,
            "F.binary_cross_entropy on sigmoid(logits) clamps log 0 to −100: "
            "for a logit of 40 the true cost is 40, not 100; use the logits "
            "(F.binary_cross_entropy_with_logits).",
        ),
    ],
    fallback="Compute D and R for each image on its own first and check them "
    "on the case where q is the prior (R = 0); both are in nats per image, "
    "and the loss is one number for the batch.",
)


# 2. The mutual information between x and z under the encoder ---------------


def _log_q_matrix(z, mu, logvar):
    """log q(z_n | x_m), summed over the latent dimensions: (N, N)."""
    return log_normal(z[:, None, :], mu[None], logvar[None]).sum(-1)


def _mutual_information(mu, logvar, eps):
    z = mu + torch.exp(0.5 * logvar) * eps
    log_q_own = log_normal(z, mu, logvar).sum(-1)
    log_q_all = _log_q_matrix(z, mu, logvar)
    log_aggregate = torch.logsumexp(log_q_all, 1) - math.log(len(mu))
    return (log_q_own - log_aggregate).mean()


def _mi_prior(mu, logvar, eps):
    z = mu + torch.exp(0.5 * logvar) * eps
    log_ratio = log_normal(z, mu, logvar) - log_standard_normal(z)
    return log_ratio.sum(-1).mean()


def _mi_no_log_n(mu, logvar, eps):
    z = mu + torch.exp(0.5 * logvar) * eps
    log_q_own = log_normal(z, mu, logvar).sum(-1)
    log_sum = torch.logsumexp(_log_q_matrix(z, mu, logvar), 1)
    return (log_q_own - log_sum).mean()


def _mi_per_dimension(mu, logvar, eps):
    z = mu + torch.exp(0.5 * logvar) * eps
    log_q_own = log_normal(z, mu, logvar).sum(-1)
    per_dim = log_normal(z[:, None, :], mu[None], logvar[None])  # (N, N, d)
    log_aggregate = (torch.logsumexp(per_dim, 1) - math.log(len(mu))).sum(-1)
    return (log_q_own - log_aggregate).mean()


def _mi_naive_exp(mu, logvar, eps):
    z = mu + torch.exp(0.5 * logvar) * eps
    log_q_own = log_normal(z, mu, logvar).sum(-1)
    aggregate = torch.exp(_log_q_matrix(z, mu, logvar)).mean(1)
    return (log_q_own - torch.log(aggregate)).mean()


def _mi_wrong_axis(mu, logvar, eps):
    z = mu + torch.exp(0.5 * logvar) * eps
    log_q_own = log_normal(z, mu, logvar).sum(-1)
    log_q_all = _log_q_matrix(z, mu, logvar)
    log_aggregate = torch.logsumexp(log_q_all, 0) - math.log(len(mu))
    return (log_q_own - log_aggregate).mean()


def _mi_variance_as_sd_plain(mu, logvar, eps):
    z = mu + torch.exp(logvar) * eps  # the variance used as σ
    log_q_own = log_normal(z, mu, logvar).sum(-1)
    log_q_all = _log_q_matrix(z, mu, logvar)
    log_aggregate = torch.logsumexp(log_q_all, 1) - math.log(len(mu))
    return (log_q_own - log_aggregate).mean()


_mu_same = _normal(1, 3).expand(6, 3).clone()
_logvar_same = _normal(1, 3).expand(6, 3).clone()

mutual_information = Exercise(
    name="mutual_information",
    question="A minibatch estimate of the mutual information between x and z "
    "under the encoder, with the aggregate posterior of the batch.",
    reference=_mutual_information,
    cases=[
        (_normal(8, 3), _normal(8, 3) - 1, _normal(8, 3)),
        (2 * _normal(5, 2), _normal(5, 2), _normal(5, 2)),
        (_mu_same, _logvar_same, _normal(6, 3)),
        (
            10 * _normal(4, 100),
            torch.full((4, 100), -20.0, dtype=f64),
            _normal(4, 100),
        ),
    ],
    labels=[
        "8 images, 3 latent dimensions",
        "5 images, 2 latent dimensions",
        "6 images with the same posterior (z says nothing about x)",
        "4 images with tight posteriors far apart, 100 dimensions "
        "(log-densities of hundreds of nats)",
    ],
    mistakes=[
        Mistake(
            "the prior instead of the aggregate posterior",
            _mi_prior,
            "That is a Monte Carlo estimate of the rate, KL(q(z|x) ‖ p(z)): "
            "the mutual information compares q(z|x) with the aggregate "
            "posterior q(z) = (1/N) Σ_m q(z|x_m) of the batch, not with the "
            "prior.",
        ),
        Mistake(
            "log N left out",
            _mi_no_log_n,
            "The aggregate posterior is the mean of the N densities, not "
            "their sum: subtract log N from the logsumexp.",
        ),
        Mistake(
            "a mixture per dimension",
            _mi_per_dimension,
            "Sum the log-densities over the latent dimensions before the "
            "logsumexp over images: q(z) is a mixture of N Gaussians in d "
            "dimensions, not a product of one mixture per dimension.",
        ),
        Mistake(
            "exp and log without logsumexp",
            _mi_naive_exp,
            "A log-density of hundreds of nats overflows exp (or underflows "
            "to 0): average the densities in logs, with torch.logsumexp over "
            "the images minus log N.",
        ),
        Mistake(
            "the mixture taken over the samples",
            _mi_wrong_axis,
            "For each sample z_n, average q(z_n | x_m) over the images m (the "
            "components of the mixture); you averaged over the samples z_n "
            "for a fixed image.",
        ),
        Mistake(
            "the variance used as the standard deviation",
            _mi_variance_as_sd_plain,
            "The samples are z = μ + σ ε with σ = exp(logvar / 2): "
            "exp(logvar) is the variance.",
        ),
    ],
    fallback="Build the N × N matrix of log q(z_n | x_m), each summed over "
    "the latent dimensions: its diagonal gives log q(z_n | x_n), and each "
    "row, averaged in logs, the mixture at z_n.",
)


# 3. The total correlation of the aggregate posterior (β-TCVAE) -------------


def _log_q_per_dimension(z, mu, logvar):
    """log q(z_nj | x_m) for every pair (n, m) and dimension j: (N, N, d)."""
    return log_normal(z[:, None, :], mu[None], logvar[None])


def _tc_terms(mu, logvar, eps, sd=None):
    """The samples' log q(z_n | x_m) per dimension, and log N."""
    sd = torch.exp(0.5 * logvar) if sd is None else sd
    z = mu + sd * eps
    return z, _log_q_per_dimension(z, mu, logvar), math.log(len(mu))


def _total_correlation(mu, logvar, eps):
    _, per_dim, log_n = _tc_terms(mu, logvar, eps)
    log_joint = torch.logsumexp(per_dim.sum(-1), 1) - log_n  # log q(z_n)
    log_marginals = (torch.logsumexp(per_dim, 1) - log_n).sum(-1)
    return (log_joint - log_marginals).mean()


def _tc_log_n_joint_only(mu, logvar, eps):
    _, per_dim, log_n = _tc_terms(mu, logvar, eps)
    log_joint = torch.logsumexp(per_dim.sum(-1), 1) - log_n
    log_marginals = torch.logsumexp(per_dim, 1).sum(-1)
    return (log_joint - log_marginals).mean()


def _tc_scale_variance(mu, logvar, eps):
    sd = torch.exp(logvar)  # the variance, where Normal takes the sd
    z = mu + sd * eps
    per_dim = torch.distributions.Normal(mu[None], sd[None]).log_prob(
        z[:, None]
    )
    log_n = math.log(len(mu))
    log_joint = torch.logsumexp(per_dim.sum(-1), 1) - log_n
    return (log_joint - (torch.logsumexp(per_dim, 1) - log_n).sum(-1)).mean()


def _tc_joint_per_dimension(mu, logvar, eps):
    _, per_dim, log_n = _tc_terms(mu, logvar, eps)
    log_joint = (torch.logsumexp(per_dim, 1) - log_n).sum(-1)
    log_marginals = (torch.logsumexp(per_dim, 1) - log_n).sum(-1)
    return (log_joint - log_marginals).mean()


def _tc_no_log_n(mu, logvar, eps):
    _, per_dim, _ = _tc_terms(mu, logvar, eps)
    log_joint = torch.logsumexp(per_dim.sum(-1), 1)
    log_marginals = torch.logsumexp(per_dim, 1).sum(-1)
    return (log_joint - log_marginals).mean()


def _tc_prior(mu, logvar, eps):
    z, per_dim, log_n = _tc_terms(mu, logvar, eps)
    log_joint = torch.logsumexp(per_dim.sum(-1), 1) - log_n
    return (log_joint - log_standard_normal(z).sum(-1)).mean()


def _tc_own_posterior(mu, logvar, eps):
    z, per_dim, log_n = _tc_terms(mu, logvar, eps)
    log_own = log_normal(z, mu, logvar).sum(-1)
    log_marginals = (torch.logsumexp(per_dim, 1) - log_n).sum(-1)
    return (log_own - log_marginals).mean()


def _tc_wrong_axis(mu, logvar, eps):
    _, per_dim, log_n = _tc_terms(mu, logvar, eps)
    log_joint = torch.logsumexp(per_dim.sum(-1), 0) - log_n
    log_marginals = (torch.logsumexp(per_dim, 0) - log_n).sum(-1)
    return (log_joint - log_marginals).mean()


def _tc_naive_exp(mu, logvar, eps):
    _, per_dim, _ = _tc_terms(mu, logvar, eps)
    joint = torch.exp(per_dim.sum(-1)).mean(1)
    marginals = torch.exp(per_dim).mean(1)
    return (torch.log(joint) - torch.log(marginals).sum(-1)).mean()


def _tc_variance_as_sd(mu, logvar, eps):
    _, per_dim, log_n = _tc_terms(mu, logvar, eps, sd=torch.exp(logvar))
    log_joint = torch.logsumexp(per_dim.sum(-1), 1) - log_n
    log_marginals = (torch.logsumexp(per_dim, 1) - log_n).sum(-1)
    return (log_joint - log_marginals).mean()


_tight = torch.full((9, 2), math.log(0.01**2), dtype=f64)
_grid = torch.tensor(
    [[a, b] for a in (-2.0, 0.0, 2.0) for b in (-2.0, 0.0, 2.0)], dtype=f64
)
_diagonal = torch.linspace(-2, 2, 9, dtype=f64)[:, None].expand(9, 2).clone()

total_correlation = Exercise(
    name="total_correlation",
    question="A minibatch estimate of the total correlation KL(q(z) ‖ Π_j "
    "q(z_j)) of the aggregate posterior (the term β-TCVAE weighs), in nats.",
    reference=_total_correlation,
    cases=[
        (_normal(8, 3), _normal(8, 3) - 1, _normal(8, 3)),
        (_mu_same, _logvar_same, _normal(6, 3)),
        (_grid, _tight, _normal(9, 2)),
        (_diagonal, _tight, _normal(9, 2)),
        (
            10 * _normal(4, 100),
            torch.full((4, 100), -20.0, dtype=f64),
            _normal(4, 100),
        ),
    ],
    labels=[
        "8 images, 3 latent dimensions",
        "6 images with the same posterior (q(z) is one Gaussian with "
        "independent dimensions: TC = 0)",
        "9 tight posteriors (σ = 0.01) whose means lie on a 3 × 3 grid",
        "9 tight posteriors whose means lie along the diagonal z_1 = z_2",
        "4 images with tight posteriors far apart, 100 dimensions "
        "(log-densities of hundreds of nats)",
    ],
    mistakes=[
        Mistake(
            "log N subtracted from the joint only",
            _tc_log_n_joint_only,
            "Each marginal q_j(z_nj) is a mean of N densities too: subtract "
            "log N from each dimension's logsumexp (d times in all), besides "
            "once for q(z).",
        ),
        Mistake(
            "the variance given as Normal's scale",
            _tc_scale_variance,
            "Normal takes the standard deviation σ = exp(logvar / 2), not the "
            "variance exp(logvar).",
        ),
        Mistake(
            "the joint as a product of per-dimension mixtures",
            _tc_joint_per_dimension,
            "Your estimate is 0 whatever the codes: q(z) is a mixture of N "
            "Gaussians in d dimensions, so sum the log-densities over the "
            "dimensions before the logsumexp over the images; only the "
            "marginals q(z_j) take one mixture per dimension.",
        ),
        Mistake(
            "log N left out",
            _tc_no_log_n,
            "Each mixture is a mean of N densities, not their sum: subtract "
            "log N from every logsumexp, once for q(z) and once per dimension "
            "for the marginals (they do not cancel: d − 1 of them remain).",
        ),
        Mistake(
            "the prior instead of the marginals",
            _tc_prior,
            "That estimates KL(q(z) ‖ p(z)), how far the aggregate posterior "
            "is from the prior; the total correlation compares q(z) with the "
            "product of its own marginals q(z_j) = (1/N) Σ_m q(z_j | x_m).",
        ),
        Mistake(
            "the own posterior instead of q(z)",
            _tc_own_posterior,
            "log q(z_n | x_n) is one image's posterior; q(z) is the mixture "
            "(1/N) Σ_m q(z_n | x_m) over the batch. Yours adds the mutual "
            "information of exercise 5 to the total correlation.",
        ),
        Mistake(
            "the sign flipped",
            lambda mu, logvar, eps: -_total_correlation(mu, logvar, eps),
            "TC = KL(q(z) ‖ Π_j q(z_j)) = E[log q(z) − Σ_j log q(z_j)]: the "
            "joint first, the product of the marginals second.",
        ),
        Mistake(
            "the mixtures taken over the samples",
            _tc_wrong_axis,
            "For each sample z_n, average q(z_n | x_m) over the images m (the "
            "components of the mixture); you averaged over the samples z_n "
            "for a fixed image.",
        ),
        Mistake(
            "exp and log without logsumexp",
            _tc_naive_exp,
            "A log-density of hundreds of nats overflows exp (or underflows "
            "to 0): average the densities in logs, with torch.logsumexp over "
            "the images minus log N.",
        ),
        Mistake(
            "the variance used as the standard deviation",
            _tc_variance_as_sd,
            "The samples are z = μ + σ ε with σ = exp(logvar / 2): "
            "exp(logvar) is the variance.",
        ),
    ],
    fallback="Start from exercise 5's matrix of log q(z_n | x_m), but keep "
    "the latent dimensions apart, shape (N, N, d): the joint mixture sums "
    "over d before averaging over the images, each marginal averages one "
    "dimension on its own.",
)
