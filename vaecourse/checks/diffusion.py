"""Checks for the exercises of the chapter "Diffusion models (DDPM)"."""

from __future__ import annotations

import math

import torch

from vaecourse.chapters.diffusion import (
    alpha_bars,
    cosine_schedule,
    linear_schedule,
)
from vaecourse.checks import Exercise, Mistake
from vaecourse.prob import log_normal

_gen = torch.Generator().manual_seed(0)
f64 = torch.float64
T = 200
_COSINE = alpha_bars(cosine_schedule(T))
_LINEAR = alpha_bars(linear_schedule(T))


def _normal(*shape, scale=1.0):
    return scale * torch.randn(*shape, generator=_gen, dtype=f64)


def _uniform(*shape, low=0.0, high=1.0):
    return low + (high - low) * torch.rand(*shape, generator=_gen, dtype=f64)


def _tensor(values):
    return torch.tensor(values, dtype=f64)


# 1. A deterministic DDIM step ----------------------------------------------


def _x0_hat(x_t, eps_hat, ab_t):
    return (x_t - (1 - ab_t).sqrt() * eps_hat) / ab_t.sqrt()


def _ddim_step(x_t, eps_hat, t, t_prev, alpha_bar):
    ab_t, ab_prev = alpha_bar[t], alpha_bar[t_prev]
    x0_hat = _x0_hat(x_t, eps_hat, ab_t)  # the model's guess of the image
    # the same noise, at the noise level of step t_prev
    return ab_prev.sqrt() * x0_hat + (1 - ab_prev).sqrt() * eps_hat


def _ddim_no_roots(x_t, eps_hat, t, t_prev, alpha_bar):
    ab_t, ab_prev = alpha_bar[t], alpha_bar[t_prev]
    x0_hat = (x_t - (1 - ab_t) * eps_hat) / ab_t
    return ab_prev * x0_hat + (1 - ab_prev) * eps_hat


def _ddpm_mean(x_t, eps_hat, t, t_prev, alpha_bar):
    alpha = alpha_bar[t] / alpha_bar[t - 1]
    beta = 1 - alpha
    return (x_t - beta / (1 - alpha_bar[t]).sqrt() * eps_hat) / alpha.sqrt()


def _ddim_shifted(x_t, eps_hat, t, t_prev, alpha_bar):
    # alpha_bar indexed as if it began at step 1 (t_prev - 1 = -1 wraps)
    ab_t, ab_prev = alpha_bar[t - 1], alpha_bar[t_prev - 1]
    x0_hat = _x0_hat(x_t, eps_hat, ab_t)
    return ab_prev.sqrt() * x0_hat + (1 - ab_prev).sqrt() * eps_hat


def _ddim_clipped(x_t, eps_hat, t, t_prev, alpha_bar):
    ab_prev = alpha_bar[t_prev]
    x0_hat = _x0_hat(x_t, eps_hat, alpha_bar[t]).clamp(-1, 1)
    return ab_prev.sqrt() * x0_hat + (1 - ab_prev).sqrt() * eps_hat


_ONE_STEP = (_normal(4, 6), _normal(4, 6), 50, 49, _COSINE)
_JUMP = (_normal(4, 6), _normal(4, 6), 200, 150, _COSINE)

ddim_step = Exercise(
    name="ddim_step",
    question="One deterministic DDIM step from x_t to x_{t_prev}: estimate x0 "
    "from the predicted noise, then noise it again to step t_prev with the "
    "same noise.",
    reference=_ddim_step,
    cases=[
        _JUMP,
        _ONE_STEP,
        (_normal(3, 5), _normal(3, 5), 10, 0, _COSINE),
        (_normal(2, 1, 4, 4), _normal(2, 1, 4, 4), 120, 100, _LINEAR),
        (_normal(3, 5), torch.zeros(3, 5, dtype=f64), 80, 40, _LINEAR),
    ],
    labels=[
        "the cosine schedule, a jump of 50 steps: t = 200, t_prev = 150",
        "the cosine schedule, one step back: t = 50, t_prev = 49",
        "the cosine schedule, the last jump: t = 10, t_prev = 0",
        "the linear schedule, images of shape (2, 1, 4, 4), t = 120, "
        "t_prev = 100",
        "the linear schedule, predicted noise 0, t = 80, t_prev = 40",
    ],
    mistakes=[
        Mistake(
            "alpha_bar for its square root",
            _ddim_no_roots,
            "alpha_bar_t is the share of the signal's variance: x_t = "
            "sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, so the weights "
            "are square roots of alpha_bar and 1 - alpha_bar.",
        ),
        Mistake(
            "one step back whatever t_prev",
            lambda x, e, t, tp, ab: _ddim_step(x, e, t, t - 1, ab),
            "Use alpha_bar[t_prev], not alpha_bar[t - 1]: a DDIM step can "
            "jump over many steps, which is what makes it fast.",
        ),
        Mistake(
            "the estimate of x0 returned",
            lambda x, e, t, tp, ab: _x0_hat(x, e, ab[t]),
            "That is the estimate of x0; the step goes on to noise it again "
            "to the level of t_prev: sqrt(alpha_bar[t_prev]) x0_hat + "
            "sqrt(1 - alpha_bar[t_prev]) eps_hat.",
        ),
        Mistake(
            "the DDPM mean",
            _ddpm_mean,
            "That is the mean of the ancestral (DDPM) step (the chapter's "
            "p_mean without clipping), which goes one step back; the DDIM "
            "step puts x0_hat and the same eps_hat together at the noise "
            "level of t_prev.",
        ),
        Mistake(
            "x0_hat clipped",
            _ddim_clipped,
            "Do not clip x0_hat to [-1, 1] here: the exercise asks for the "
            "plain update (the chapter's sampler clips as an extra).",
        ),
        Mistake(
            "alpha_bar indexed from step 1",
            _ddim_shifted,
            "alpha_bar[0] is ᾱ_0 = 1: index with t and t_prev themselves.",
        ),
    ],
    fallback="Test your step with eps_hat the true noise: from x_t = "
    "sqrt(ab_t) x0 + sqrt(1 - ab_t) eps it must land exactly on "
    "sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps, for any t_prev < t.",
)


# 2. The best possible noise prediction for Gaussian data --------------------


def _optimal_eps(x_t, alpha_bar_t, mean, var):
    # E[eps | x_t] = Cov(eps, x_t) / Var(x_t) (x_t - E[x_t]), per pixel
    a = alpha_bar_t
    return (1 - a).sqrt() * (x_t - a.sqrt() * mean) / (a * var + 1 - a)


def _eps_through_x0(x_t, alpha_bar_t, mean, var):
    a = alpha_bar_t
    x0_mean = mean + a.sqrt() * var / (a * var + 1 - a) * (
        x_t - a.sqrt() * mean
    )
    return (x_t - a.sqrt() * x0_mean) / (1 - a).sqrt()  # 0 / 0 at a = 1


def _scalar(value):
    return torch.tensor(value, dtype=f64)


_A_CLEAN = _COSINE[1]
_EPS_CLEAN = _normal(2, 4)
_X_CLEAN = _A_CLEAN.sqrt() * -1.0 + (1 - _A_CLEAN).sqrt() * _EPS_CLEAN

optimal_noise_prediction = Exercise(
    name="optimal_noise_prediction",
    question="The best possible noise prediction E[eps | x_t] when every "
    "pixel of x0 is independent Gaussian N(mean, var): what a perfect "
    "denoiser outputs.",
    reference=_optimal_eps,
    cases=[
        (
            _normal(3, 5),
            _scalar(0.5),
            _uniform(5, low=-1, high=1),
            _uniform(5, low=0.05, high=0.5),
        ),
        (_X_CLEAN, _A_CLEAN, _scalar(-1.0), _scalar(0.0)),
        (_normal(3, 5), _COSINE[T], _uniform(5, low=-1), _uniform(5, low=0.1)),
        (
            _normal(2, 3),
            _scalar(1.0),
            _uniform(3, low=-1),
            _uniform(3, low=0.1),
        ),
        (_normal(2, 1, 3, 3), _scalar(0.3), _scalar(0.0), _scalar(1.0)),
    ],
    labels=[
        "alpha_bar_t = 0.5, a mean and a variance per pixel (5 pixels)",
        "a background pixel (mean -1, var 0: x0 is known) at t = 1 of the "
        "cosine schedule",
        "alpha_bar_t = alpha_bar_T of the cosine schedule (almost pure noise)",
        "alpha_bar_t = 1 (step 0: no noise at all)",
        "images of shape (2, 1, 3, 3), mean 0, var 1, alpha_bar_t = 0.3",
    ],
    mistakes=[
        Mistake(
            "standard deviation for variance",
            lambda x, a, m, v: (
                (1 - a).sqrt() * (x - a.sqrt() * m) / (a * v.sqrt() + 1 - a)
            ),
            "var is a variance: Var(x_t) = alpha_bar_t var + (1 - "
            "alpha_bar_t), with var itself, not its square root.",
        ),
        Mistake(
            "the mean's signal not subtracted",
            lambda x, a, m, v: (1 - a).sqrt() * x / (a * v + 1 - a),
            "The prediction is proportional to x_t - E[x_t], and E[x_t] = "
            "sqrt(alpha_bar_t) mean: subtract the signal of the mean first.",
        ),
        Mistake(
            "1 - alpha_bar for its square root",
            lambda x, a, m, v: (1 - a) * (x - a.sqrt() * m) / (a * v + 1 - a),
            "Cov(eps, x_t) = sqrt(1 - alpha_bar_t), the weight of eps in x_t, "
            "not 1 - alpha_bar_t.",
        ),
        Mistake(
            "x0 taken to be the mean",
            lambda x, a, m, v: (x - a.sqrt() * m) / (1 - a).sqrt(),
            "Solving x_t = sqrt(ab) x0 + sqrt(1 - ab) eps for eps with x0 = "
            "mean is right only when var = 0; when x0 varies, part of x_t - "
            "sqrt(ab) mean is signal, and the prediction shrinks by the "
            "share of x_t's variance that the noise makes.",
        ),
        Mistake(
            "alpha_bar for its square root in the mean",
            lambda x, a, m, v: (1 - a).sqrt() * (x - a * m) / (a * v + 1 - a),
            "E[x_t] = sqrt(alpha_bar_t) mean: the signal is scaled by the "
            "square root of alpha_bar_t.",
        ),
        Mistake(
            "through E[x0 | x_t], divided by sqrt(1 - alpha_bar)",
            _eps_through_x0,
            "At ᾱ_t = 1 your formula divides by √(1 − ᾱ_t) = 0; write it as "
            "Cov/Var · (x_t − E[x_t]), which gives 0 there.",
        ),
    ],
    fallback="Work out the three moments the formula needs, E[x_t], "
    "Var(x_t) and Cov(eps, x_t), from x_t = sqrt(ab) x0 + sqrt(1 - ab) eps "
    "with x0 and eps independent, then check the two cases the question "
    "names.",
)


# 3. The discretized Gaussian decoder of Ho et al. ---------------------------

_HALF_BIN = 1 / 255  # grey levels in [-1, 1] are 2/255 apart


def _log_bin(lo, hi):
    """log(Phi(hi) - Phi(lo)) for lo < hi, without cancellation: in the
    upper tail through Phi(-lo) - Phi(-hi)."""
    log_ndtr = torch.special.log_ndtr
    upper = log_ndtr(-lo) + torch.log(
        -torch.expm1(log_ndtr(-hi) - log_ndtr(-lo))
    )
    lower = log_ndtr(hi) + torch.log(-torch.expm1(log_ndtr(lo) - log_ndtr(hi)))
    return torch.where(lo > 0, upper, lower)


def _discretized_ll(x0, mean, logvar):
    std = torch.exp(0.5 * logvar)
    lo = (x0 - _HALF_BIN - mean) / std
    hi = (x0 + _HALF_BIN - mean) / std
    log_p = torch.where(
        x0 < -0.999,  # the bin of -1 reaches down to -inf
        torch.special.log_ndtr(hi),
        torch.where(
            x0 > 0.999,  # the bin of 1 reaches up to +inf
            torch.special.log_ndtr(-lo),
            _log_bin(lo, hi),
        ),
    )
    return log_p.flatten(1).sum(1)


def _ll_variant(x0, mean, logvar, std=None, half=_HALF_BIN, edges=True):
    std = torch.exp(0.5 * logvar) if std is None else std
    lo, hi = (x0 - half - mean) / std, (x0 + half - mean) / std
    log_p = _log_bin(lo, hi)
    if edges:
        log_p = torch.where(x0 < -0.999, torch.special.log_ndtr(hi), log_p)
        log_p = torch.where(x0 > 0.999, torch.special.log_ndtr(-lo), log_p)
    return log_p.flatten(1).sum(1)


def _ll_naive(x0, mean, logvar):
    std = torch.exp(0.5 * logvar)
    cdf_hi = torch.special.ndtr((x0 + _HALF_BIN - mean) / std)
    cdf_lo = torch.special.ndtr((x0 - _HALF_BIN - mean) / std)
    log_p = torch.where(
        x0 < -0.999,
        torch.log(cdf_hi),
        torch.where(
            x0 > 0.999, torch.log(1 - cdf_lo), torch.log(cdf_hi - cdf_lo)
        ),
    )
    return log_p.flatten(1).sum(1)


def _ll_clamped(x0, mean, logvar):
    """Ho et al.'s code style: probabilities clamped at 1e-12 before the
    log."""
    std = torch.exp(0.5 * logvar)
    cdf_hi = torch.special.ndtr((x0 + _HALF_BIN - mean) / std)
    cdf_lo = torch.special.ndtr((x0 - _HALF_BIN - mean) / std)
    p = torch.where(
        x0 < -0.999,
        cdf_hi,
        torch.where(x0 > 0.999, 1 - cdf_lo, cdf_hi - cdf_lo),
    )
    return p.clamp(min=1e-12).log().flatten(1).sum(1)


def _levels(*shape, low=1, high=254):
    """Random grey levels in [-1, 1] (k = low .. high of 0 .. 255)."""
    k = torch.randint(low, high + 1, shape, generator=_gen).to(f64)
    return -1 + 2 * k / 255


_X_GRID = _levels(2, 6)
_X_IMAGE = _levels(2, 1, 3, 3, low=0, high=255)
_X_SHARP = _levels(1, 5)
_LOGVAR_GRID = _uniform(2, 6, low=math.log(0.003**2), high=math.log(0.05**2))
_LOGVAR_IMAGE = _uniform(
    2, 1, 3, 3, low=math.log(0.05**2), high=math.log(0.5**2)
)


def _near(x0, logvar):
    """Means a few standard deviations from the pixels, inside [-1, 1]."""
    std = torch.exp(0.5 * logvar)
    return (x0 + 1.5 * std * _normal(*x0.shape)).clamp(-1, 1)


discretized_gaussian_log_likelihood = Exercise(
    name="discretized_gaussian_log_likelihood",
    question="The log-probability of an 8-bit image under Ho et al.'s "
    "discretized Gaussian decoder: each pixel's probability is the Gaussian's "
    "mass on the pixel's bin, the two end bins open-ended.",
    reference=_discretized_ll,
    cases=[
        (_X_GRID, _near(_X_GRID, _LOGVAR_GRID), _LOGVAR_GRID),
        (_X_IMAGE, _near(_X_IMAGE, _LOGVAR_IMAGE), _LOGVAR_IMAGE),
        (
            _tensor([[-1.0, 1.0, -1.0, 1.0]]),
            torch.zeros(1, 4, dtype=f64),
            torch.full((1, 4), math.log(0.5**2), dtype=f64),
        ),
        (
            _tensor([[-1.0, 1.0], [-1.0, 1.0]]),
            _tensor([[1.0, -1.0], [-0.9, 0.9]]),
            torch.full((2, 2), math.log(0.01**2), dtype=f64),
        ),
        (
            _X_SHARP,
            _X_SHARP.clone(),
            torch.full((1, 5), math.log(1e-8), dtype=f64),
        ),
    ],
    labels=[
        "2 images of 6 interior grey levels, standard deviations from 0.003 "
        "to 0.05, means near the pixels",
        "2 images of shape (1, 3, 3), end levels -1 and 1 included, means "
        "near the pixels",
        "pixels -1, 1, -1, 1 with mean 0 and standard deviation 0.5",
        "pixels -1 and 1 with standard deviation 0.01 and means 1 and -1 "
        "(far out in the tails), or -0.9 and 0.9",
        "5 interior pixels exactly at the mean, standard deviation 1e-4",
    ],
    mistakes=[
        Mistake(
            "logvar used as log σ",
            lambda x, m, lv: _ll_variant(x, m, lv, std=torch.exp(lv)),
            "logvar is the log of the variance: the standard deviation is "
            "exp(logvar / 2).",
        ),
        Mistake(
            "bins half as wide",
            lambda x, m, lv: _ll_variant(x, m, lv, half=0.5 / 255),
            "In [-1, 1] neighbouring grey levels are 2/255 apart, so each "
            "bin reaches 1/255 on either side of its level (1/255 is the "
            "spacing in [0, 1]).",
        ),
        Mistake(
            "no open-ended end bins",
            lambda x, m, lv: _ll_variant(x, m, lv, edges=False),
            "The bins of -1 and 1 are open-ended: a pixel at -1 gets all the "
            "mass below -1 + 1/255, a pixel at 1 all the mass above 1 - "
            "1/255, so that the 256 probabilities add up to 1.",
        ),
        Mistake(
            "density times the bin width",
            lambda x, m, lv: (
                (log_normal(x, m, lv) + math.log(2 / 255)).flatten(1).sum(1)
            ),
            "Density times bin width only approximates the bin's probability "
            "(badly when the standard deviation is smaller than a bin): take "
            "the difference of the normal CDF at the two ends of the bin.",
        ),
        Mistake(
            "log of the CDF",
            _ll_naive,
            "Phi(z) rounds to 0 (or 1 - Phi(z) does) far out in the tails and "
            "its log becomes -inf: use torch.special.log_ndtr(z) for log "
            "Phi(z), and log_ndtr(-z) for log(1 - Phi(z)).",
        ),
        Mistake(
            "a mean over pixels",
            lambda x, m, lv: _discretized_ll(x, m, lv) / x[0].numel(),
            "Sum the log-probabilities over the pixels of an image: the "
            "pixels are independent given the mean, so their probabilities "
            "multiply.",
        ),
        Mistake(
            "probabilities clamped at 1e-12",
            _ll_clamped,
            "Clamping the probability at 1e-12 keeps the log finite but caps "
            "it at −27.6 nats per pixel; log_ndtr gives the true value in the "
            "tails.",
        ),
    ],
    fallback="Check one pixel against a direct computation of the Gaussian's "
    "mass on its bin (the difference of two ndtr values) where that is "
    "accurate, then make the three kinds of bin (−1, 1, inner) finite in the "
    "tails by working with log_ndtr.",
)
