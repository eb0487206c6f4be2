"""Checks for the exercises of the chapter "The β-VAE"."""

from __future__ import annotations

import math

import torch

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
    ],
    fallback="The distortion is the binary cross-entropy summed over the "
    "pixels of each image, the rate the closed-form KL summed over the latent "
    "dimensions; the loss is the batch mean of D + β R.",
)


# 2. The Gaussian decoder's distortion ---------------------------------------


def _gaussian_distortion(x, mean, sigma):
    d = x.shape[-1]
    squared = ((x - mean) ** 2).sum(-1)
    return squared / (2 * sigma**2) + d / 2 * math.log(2 * math.pi * sigma**2)


def _squared(x, mean):
    return ((x - mean) ** 2).sum(-1)


def _grey(*shape):
    return _uniform(*shape)


_x_same = _grey(2, 784)

gaussian_distortion = Exercise(
    name="gaussian_distortion",
    question="The distortion −log N(x; x̂, σ² I) of a Gaussian decoder, per "
    "image, in nats.",
    reference=_gaussian_distortion,
    cases=[
        (_grey(3, 784), _grey(3, 784), 0.3),
        (_grey(2, 784), _grey(2, 784), 1 / math.sqrt(2)),
        (_x_same, _x_same.clone(), 0.1),
        (_grey(2, 3, 784), _grey(2, 3, 784), 0.05),
        (_grey(2, 4), _grey(2, 4), 2.0),
    ],
    labels=[
        "3 images of 784 grey pixels, σ = 0.3",
        "2 images, σ = 1/√2 (β = 1 with the summed squared error)",
        "a perfect reconstruction (x̂ = x), σ = 0.1",
        "a batch of shape (2, 3, 784), σ = 0.05",
        "2 toy images of 4 pixels, σ = 2",
    ],
    mistakes=[
        Mistake(
            "the normalizing constant left out",
            lambda x, mean, sigma: _squared(x, mean) / (2 * sigma**2),
            "You left out the normalizing constant (d/2) log(2πσ²), d the "
            "number of pixels: it does not change the gradients for a fixed "
            "σ, but without it the distortion is not −log p(x|z), and a "
            "perfect reconstruction would cost 0 nats.",
        ),
        Mistake(
            "σ for σ² under the squared error",
            lambda x, mean, sigma: (
                _squared(x, mean) / (2 * sigma)
                + x.shape[-1] / 2 * math.log(2 * math.pi * sigma**2)
            ),
            "The squared error is divided by 2σ², twice the variance, not by "
            "2σ.",
        ),
        Mistake(
            "the ½ of the squared error left out",
            lambda x, mean, sigma: (
                _squared(x, mean) / sigma**2
                + x.shape[-1] / 2 * math.log(2 * math.pi * sigma**2)
            ),
            "Check the factor of the squared error: the Gaussian's exponent "
            "is −(x − x̂)² / (2σ²), with a ½.",
        ),
        Mistake(
            "σ for σ² in the constant",
            lambda x, mean, sigma: (
                _squared(x, mean) / (2 * sigma**2)
                + x.shape[-1] / 2 * math.log(2 * math.pi * sigma)
            ),
            "The constant is (d/2) log(2πσ²), with the variance inside the "
            "log (or d log σ + (d/2) log 2π).",
        ),
        Mistake(
            "averaged over the pixels",
            lambda x, mean, sigma: (
                _gaussian_distortion(x, mean, sigma) / x.shape[-1]
            ),
            "Sum over the pixels of each image, do not average: the "
            "distortion is in nats per image, like the rate it is weighed "
            "against.",
        ),
        Mistake(
            "784 pixels whatever the image",
            lambda x, mean, sigma: (
                _squared(x, mean) / (2 * sigma**2)
                + 784 / 2 * math.log(2 * math.pi * sigma**2)
            ),
            "Count the pixels from x (its last dimension) instead of writing "
            "784: the constant is d/2 log(2πσ²) for images of d pixels.",
        ),
    ],
    fallback="−log N(x; x̂, σ² I) = Σ (x − x̂)² / (2σ²) + (d/2) log(2πσ²), the "
    "sum over the d pixels of the last dimension.",
)


# 3. The mutual information between x and z under the encoder ---------------


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
    fallback="Draw z_n = μ_n + σ_n ε_n; with log q(z_n | x_m) summed over "
    "the dimensions, the estimate is the mean over n of log q(z_n | x_n) − "
    "[logsumexp_m log q(z_n | x_m) − log N].",
)
