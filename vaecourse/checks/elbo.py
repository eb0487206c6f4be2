"""Checks for the exercises of the chapter "Latent variables and the ELBO"."""

from __future__ import annotations

import math

import torch

from vaecourse.chapters.kl import gaussian_kl_standard
from vaecourse.checks import Exercise, Mistake

_gen = torch.Generator().manual_seed(0)
f64 = torch.float64


def _normal(*shape):
    return torch.randn(*shape, generator=_gen, dtype=f64)


def _uniform(*shape):
    return torch.rand(*shape, generator=_gen, dtype=f64)


# 1. The ELBO of a VAE with a Gaussian decoder -------------------------------


def _gaussian_elbo(x, mean, mu, logvar, sigma2):
    d = x.shape[-1]
    sigma2 = torch.as_tensor(sigma2, dtype=x.dtype)
    log_px_z = -0.5 * d * torch.log(2 * math.pi * sigma2) - (
        (x - mean) ** 2
    ).sum(-1) / (2 * sigma2)
    return log_px_z.mean(0) - gaussian_kl_standard(mu, logvar).sum(-1)


def _elbo_terms(x, mean, mu, logvar, sigma2):
    """The reconstruction term per sample (L, B) and the KL per image (B,)."""
    d = x.shape[-1]
    sigma2 = torch.as_tensor(sigma2, dtype=x.dtype)
    log_px_z = -0.5 * d * torch.log(2 * math.pi * sigma2) - (
        (x - mean) ** 2
    ).sum(-1) / (2 * sigma2)
    return log_px_z, gaussian_kl_standard(mu, logvar).sum(-1)


def _elbo_pixel_mean(x, mean, mu, logvar, sigma2):
    sigma2 = torch.as_tensor(sigma2, dtype=x.dtype)
    log_px_z = -0.5 * torch.log(2 * math.pi * sigma2) - ((x - mean) ** 2).mean(
        -1
    ) / (2 * sigma2)
    return log_px_z.mean(0) - gaussian_kl_standard(mu, logvar).sum(-1)


def _elbo_sigma2_as_sd(x, mean, mu, logvar, sigma2):
    return _gaussian_elbo(
        x, mean, mu, logvar, torch.as_tensor(sigma2, dtype=x.dtype) ** 2
    )


def _elbo_no_constant(x, mean, mu, logvar, sigma2):
    log_px_z = -((x - mean) ** 2).sum(-1) / (2 * sigma2)
    return log_px_z.mean(0) - gaussian_kl_standard(mu, logvar).sum(-1)


def _elbo_kl_added(x, mean, mu, logvar, sigma2):
    log_px_z, kl = _elbo_terms(x, mean, mu, logvar, sigma2)
    return log_px_z.mean(0) + kl


def _elbo_kl_logvar_sign(x, mean, mu, logvar, sigma2):
    log_px_z, _ = _elbo_terms(x, mean, mu, logvar, sigma2)
    kl = 0.5 * (torch.exp(logvar) + mu**2 - 1 + logvar)
    return log_px_z.mean(0) - kl.sum(-1)


def _elbo_summed_over_draws(x, mean, mu, logvar, sigma2):
    log_px_z, kl = _elbo_terms(x, mean, mu, logvar, sigma2)
    return log_px_z.sum(0) - kl


def _elbo_batch_mean(x, mean, mu, logvar, sigma2):
    return _gaussian_elbo(x, mean, mu, logvar, sigma2).mean()


_x_grey = _uniform(3, 784)
gaussian_decoder_elbo = Exercise(
    name="gaussian_decoder_elbo",
    question="The ELBO per image of a VAE with a Gaussian decoder, from the "
    "decoder's means at L codes per image and the encoder's mu and logvar.",
    reference=_gaussian_elbo,
    cases=[
        (
            _uniform(2, 10),
            _uniform(4, 2, 10),
            _normal(2, 3),
            _normal(2, 3),
            0.1,
        ),
        (_x_grey, _uniform(1, 3, 784), _normal(3, 8), _normal(3, 8), 0.05),
        (
            _uniform(1, 6),
            _uniform(5, 1, 6),
            torch.zeros(1, 2, dtype=f64),
            torch.zeros(1, 2, dtype=f64),
            0.3,
        ),
        (
            _x_grey[:2],
            _x_grey[:2].expand(2, 2, 784).clone(),
            torch.tensor([[2.0, -1.0], [0.0, 0.5]], dtype=f64),
            torch.tensor([[-4.0, 1.0], [0.0, -2.0]], dtype=f64),
            torch.tensor(1.0, dtype=f64),
        ),
    ],
    labels=[
        "4 draws per image, 2 images of 10 pixels, 3 latent dimensions, "
        "sigma2 = 0.1",
        "1 draw per image, 3 images of 784 pixels, 8 latent dimensions, "
        "sigma2 = 0.05",
        "5 draws of 1 image, mu = 0 and logvar = 0 (q is the prior), "
        "sigma2 = 0.3",
        "2 draws per image, decoder means equal to x (no error), "
        "sigma2 = 1 as a tensor",
    ],
    mistakes=[
        Mistake(
            "a per-pixel mean",
            _elbo_pixel_mean,
            "Sum log p(x|z) over the pixels, do not average: a per-pixel mean "
            "is d times (784 for MNIST) smaller and upsets the balance with "
            "the KL term.",
        ),
        Mistake(
            "sigma2 used as a standard deviation",
            _elbo_sigma2_as_sd,
            "sigma2 is already the variance σ²: did you square it again?",
        ),
        Mistake(
            "the normalizing constant left out",
            _elbo_no_constant,
            "log N(x; m, σ² I) has the constant -(d/2) log(2πσ²): it does not "
            "change the gradient with respect to the networks, but without it "
            "the value is not the ELBO and cannot be compared with log p(x).",
        ),
        Mistake(
            "the KL term added",
            _elbo_kl_added,
            "The ELBO subtracts the KL term: E_q[log p(x|z)] - KL(q ‖ p(z)).",
        ),
        Mistake(
            "the sign of log var in the KL",
            _elbo_kl_logvar_sign,
            "Check the sign of log σ² in the KL: it is "
            "½ Σ (σ² + μ² - 1 - log σ²), so a narrow q costs more.",
        ),
        Mistake(
            "summed over the draws",
            _elbo_summed_over_draws,
            "Average the reconstruction term over the L draws (the first "
            "dimension of mean): it estimates an expectation, so it must not "
            "scale with L.",
        ),
        Mistake(
            "the negative ELBO (the loss)",
            lambda *args: -_gaussian_elbo(*args),
            "You returned the negative ELBO (the loss); the ELBO is "
            "E_q[log p(x|z)] - KL.",
        ),
        Mistake(
            "averaged over the batch",
            _elbo_batch_mean,
            "Return one ELBO per image, shape (B,): do not average over the "
            "batch.",
        ),
    ],
    fallback="Check the two terms one at a time: log N(x; mean, σ² I), "
    "normalizing constant included, summed over the d pixels and averaged "
    "over the L draws (with mean = x only the constant is left), and the "
    "closed-form KL of the KL chapter summed over the latent dimensions.",
)


# 2. The effective sample size of importance weights -------------------------


def _ess(log_w):
    return torch.exp(
        2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)
    )


def _ess_unstable(log_w):
    w = torch.exp(log_w)
    return w.sum(0) ** 2 / (w**2).sum(0)


_w_big = 400 + 3 * _normal(6)
effective_sample_size = Exercise(
    name="effective_sample_size",
    question="The effective sample size (Σ w)² / Σ w² of importance weights "
    "given as log-weights, computed without overflow.",
    reference=_ess,
    cases=[
        (_normal(8),),
        (5 * _normal(10, 3),),
        (torch.full((5,), -2.0, dtype=f64),),
        (torch.tensor([0.0, -1000.0, -1000.0], dtype=f64),),
        (_w_big,),
        (_w_big - 1200,),
    ],
    labels=[
        "8 random log-weights",
        "log-weights of shape (10, 3): 10 samples for each of 3 images",
        "5 equal log-weights",
        "log w = [0, -1000, -1000] (one weight dominates)",
        "6 log-weights around +400 nats (a density over 784 pixels)",
        "6 log-weights around -800 nats (a badly fitting model)",
    ],
    mistakes=[
        Mistake(
            "exp of the log-weights overflows",
            _ess_unstable,
            "exp(log w) overflows for log-weights of hundreds of nats (and "
            "underflows to 0 for large negative ones), giving nan: work with "
            "logsumexp, or subtract the largest log-weight first (the ratio "
            "does not change).",
        ),
        Mistake(
            "the ratio upside down",
            lambda log_w: 1 / _ess(log_w),
            "Your ratio is upside down: the effective sample size is "
            "(Σ w)² / Σ w², which is K for equal weights and 1 when one "
            "weight dominates.",
        ),
        Mistake(
            "divided by the number of samples",
            lambda log_w: _ess(log_w) / log_w.shape[0],
            "Return the effective number of samples, not the fraction of K: "
            "for K equal weights it is K.",
        ),
        Mistake(
            "log-weights used as weights",
            lambda log_w: log_w.sum(0) ** 2 / (log_w**2).sum(0),
            "The weights are w = exp(log w); the formula uses the weights "
            "themselves, not their logarithms.",
        ),
        Mistake(
            "the samples along the last dimension",
            lambda log_w: _ess(log_w.movedim(-1, 0)),
            "The samples run along the first dimension (shape (K, ...)), as "
            "in iw_bound; the other dimensions are separate images.",
        ),
    ],
    fallback="Work in logarithms: log Σ w and log Σ w² with torch.logsumexp "
    "over dim 0, then combine.",
)


# 3. A posterior mean by self-normalised importance sampling ------------------


def _snis_mean(z, log_w):
    weights = torch.softmax(log_w, 0)
    return (weights.unsqueeze(-1) * z).sum(0)


def _snis_unstable(z, log_w):
    w = torch.exp(log_w)
    return ((w / w.sum(0)).unsqueeze(-1) * z).sum(0)


def _snis_unnormalised(z, log_w):
    return (torch.exp(log_w).unsqueeze(-1) * z).sum(0)


snis_posterior_mean = Exercise(
    name="snis_posterior_mean",
    question="The posterior mean E[z | x] estimated from samples of a "
    "proposal q and their log importance weights (self-normalised "
    "importance sampling).",
    reference=_snis_mean,
    cases=[
        (_normal(6, 2), _normal(6)),
        (_normal(5, 4, 3), 3 * _normal(5, 4)),
        (_normal(4, 3), torch.full((4,), 1.5, dtype=f64)),
        (_normal(3, 2), 750 + _normal(3)),
        (
            _normal(4, 2),
            torch.tensor([-900.0, -905.0, -901.0, -930.0], dtype=f64),
        ),
    ],
    labels=[
        "6 samples of a 2-D code with random log-weights",
        "z of shape (5, 4, 3): 5 samples for each of 4 images, 3-D codes",
        "4 samples with equal log-weights 1.5",
        "3 samples with log-weights around +750 nats",
        "4 samples with log-weights around -900 nats",
    ],
    mistakes=[
        Mistake(
            "the weights not normalised",
            _snis_unnormalised,
            "Normalise the weights: Σ_i w_i z_i / K estimates "
            "p(x) · E[z | x], and p(x) is unknown; dividing by Σ_i w_i "
            "(which estimates K · p(x)) cancels it.",
        ),
        Mistake(
            "exp of the log-weights overflows",
            _snis_unstable,
            "exp(log w) overflows or underflows for log-weights of hundreds "
            "of nats, giving nan: subtract the largest log-weight before "
            "exponentiating, or use torch.softmax over the samples.",
        ),
        Mistake(
            "the weights ignored",
            lambda z, log_w: z.mean(0),
            "The plain mean of the samples estimates the mean of q, not of "
            "the posterior: weight each sample by its normalised importance "
            "weight.",
        ),
        Mistake(
            "log-weights used as weights",
            lambda z, log_w: ((log_w / log_w.sum(0)).unsqueeze(-1) * z).sum(0),
            "The weights are w = exp(log w), normalised to sum to 1; the "
            "log-weights themselves are not weights.",
        ),
    ],
    fallback="Try equal log-weights first, where the answer is the plain "
    "mean of the samples; then normalise the weights to sum to 1 over the "
    "samples (the first dimension) without forming exp of a log-weight of "
    "hundreds of nats.",
)
