"""Checks for the exercises of the chapter "The variational autoencoder"."""

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


# 1. The KL term with free bits -----------------------------------------------


def _free_bits(mu, logvar, lam):
    per_dimension = gaussian_kl_standard(mu, logvar).mean(0)
    return per_dimension.clamp(min=lam).sum()


def _free_bits_per_image(mu, logvar, lam):
    return gaussian_kl_standard(mu, logvar).clamp(min=lam).sum(-1).mean()


def _free_bits_total(mu, logvar, lam):
    total = gaussian_kl_standard(mu, logvar).mean(0).sum()
    return total.clamp(min=lam)


def _free_bits_min(mu, logvar, lam):
    return gaussian_kl_standard(mu, logvar).mean(0).clamp(max=lam).sum()


def _free_bits_batch_sum(mu, logvar, lam):
    return gaussian_kl_standard(mu, logvar).sum(0).clamp(min=lam).sum()


def _free_bits_hinge(mu, logvar, lam):
    per_dimension = gaussian_kl_standard(mu, logvar).mean(0)
    return (per_dimension - lam).clamp(min=0).sum()


def _free_bits_logvar_sign(mu, logvar, lam):
    kl = 0.5 * (torch.exp(logvar) + mu**2 - 1 + logvar)
    return kl.mean(0).clamp(min=lam).sum()


# means and log-variances whose KL per dimension straddles 0.5 nats
_mu_mixed = _normal(8, 4) * torch.tensor([0.2, 0.8, 1.5, 0.5], dtype=f64)
_logvar_mixed = _normal(8, 4) * 0.5 - torch.tensor(
    [0.1, 0.5, 1.0, 0.3], dtype=f64
)

free_bits_kl = Exercise(
    name="free_bits_kl",
    question="The KL term with free bits: each latent dimension's KL, "
    "averaged over the batch, counts at least λ nats.",
    reference=_free_bits,
    cases=[
        (_mu_mixed, _logvar_mixed, 0.5),
        (_mu_mixed, _logvar_mixed, 0.0),
        (torch.zeros(5, 3, dtype=f64), torch.zeros(5, 3, dtype=f64), 0.25),
        (_normal(1, 3), _normal(1, 3), 1.0),
        (_normal(6, 2) * 3, _normal(6, 2) - 2, 0.1),
    ],
    labels=[
        "a batch of 8 images, 4 latent dimensions, lam = 0.5",
        "the same batch with lam = 0 (no free bits)",
        "mu = 0 and logvar = 0 (q is the prior) for 5 images and 3 "
        "dimensions, lam = 0.25",
        "one image, 3 latent dimensions, lam = 1",
        "6 images with large mu and small variances, 2 dimensions, lam = 0.1",
    ],
    mistakes=[
        Mistake(
            "the floor applied per image",
            _free_bits_per_image,
            "Average each dimension's KL over the batch first, then apply "
            "the floor λ: the free bits are per dimension on average, not "
            "per image.",
        ),
        Mistake(
            "the floor applied to the total",
            _free_bits_total,
            "The floor λ applies to each latent dimension separately (a "
            "dimension below λ costs λ), not to the KL summed over the "
            "dimensions.",
        ),
        Mistake(
            "a ceiling instead of a floor",
            _free_bits_min,
            "Free bits are a floor: each dimension counts max(λ, KL_j), so a "
            "dimension below λ nats gets no gradient pushing it to the "
            "prior. Yours caps the KL at λ instead.",
        ),
        Mistake(
            "summed over the batch",
            _free_bits_batch_sum,
            "Average each dimension's KL over the images of the batch, do "
            "not sum it: the loss is per image, as in train_vae.",
        ),
        Mistake(
            "the sign of log var in the KL",
            _free_bits_logvar_sign,
            "Check the sign of log σ² in the KL: it is "
            "½ (σ² + μ² - 1 - log σ²) per dimension.",
        ),
        Mistake(
            "the hinge max(0, KL - λ)",
            _free_bits_hinge,
            "max(λ, KL_j) = λ + max(0, KL_j − λ): yours drops the constant λ "
            "per dimension; the gradients agree but the KL term's value does "
            "not.",
        ),
    ],
    fallback="Work out the KL of each latent dimension for each image first, "
    "shape (B, k), and compare it with gaussian_kl_standard; then read the "
    "formula again: where does the floor λ apply, and over what is the "
    "result summed?",
)


# 2. Merging importance-weighted estimates computed in chunks ----------------


def _merge(log_means, sizes):
    log_sizes = torch.log(sizes.to(log_means.dtype)).unsqueeze(-1)
    return torch.logsumexp(log_means + log_sizes, 0) - torch.log(
        sizes.sum().to(log_means.dtype)
    )


def _merge_mean(log_means, sizes):
    return log_means.mean(0)


def _merge_weighted_mean(log_means, sizes):
    weights = sizes.to(log_means.dtype).unsqueeze(-1)
    return (weights * log_means).sum(0) / weights.sum()


def _merge_ignoring_sizes(log_means, sizes):
    return torch.logsumexp(log_means, 0) - math.log(len(log_means))


def _merge_unstable(log_means, sizes):
    weights = sizes.to(log_means.dtype).unsqueeze(-1)
    return torch.log((weights * torch.exp(log_means)).sum(0) / weights.sum())


def _merge_not_divided(log_means, sizes):
    log_sizes = torch.log(sizes.to(log_means.dtype)).unsqueeze(-1)
    return torch.logsumexp(log_means + log_sizes, 0)


merge_log_means = Exercise(
    name="merge_log_means",
    question="The importance-weighted estimate log (1/K) Σ w of K samples, "
    "from the estimates of chunks of samples and the chunks' sizes.",
    reference=_merge,
    cases=[
        (-90 + 3 * _normal(3, 4), torch.tensor([50, 50, 50])),
        (-90 + 3 * _normal(3, 2), torch.tensor([1000, 10, 1])),
        (-85 + _normal(1, 5), torch.tensor([20])),
        (-800 + _normal(2, 3), torch.tensor([30, 70])),
    ],
    labels=[
        "3 chunks of 50 samples for 4 images",
        "3 chunks of 1000, 10 and 1 samples for 2 images",
        "a single chunk of 20 samples for 5 images",
        "2 chunks of 30 and 70 samples, estimates around -800 nats",
    ],
    mistakes=[
        Mistake(
            "the chunks' estimates averaged",
            _merge_mean,
            "Averaging the chunks' log-estimates gives (in expectation) the "
            "average of the bounds of the chunks' sizes, each looser than "
            "that of all K samples: "
            "combine the weights themselves, Σ_c K_c exp(L_c), and take the "
            "log at the end.",
        ),
        Mistake(
            "a size-weighted average of the estimates",
            _merge_weighted_mean,
            "Weighting the chunks' log-estimates by their sizes still "
            "averages logarithms; average the weights instead: "
            "log(Σ_c K_c exp(L_c) / K).",
        ),
        Mistake(
            "the chunk sizes ignored",
            _merge_ignoring_sizes,
            "A chunk of K_c samples holds K_c weights: its estimate "
            "L_c = log (1/K_c) Σ w counts K_c times, so add log K_c to it "
            "before the logsumexp.",
        ),
        Mistake(
            "the sum not divided by K",
            _merge_not_divided,
            "Divide by the total number of samples K = Σ_c K_c: the estimate "
            "is the log of the mean weight, not of the sum.",
        ),
        Mistake(
            "exp of the estimates underflows",
            _merge_unstable,
            "exp(L_c) underflows to 0 for estimates of hundreds of negative "
            "nats, and log 0 = -inf: use torch.logsumexp.",
        ),
    ],
    fallback="Go back to the weights: what is the sum of chunk c's weights, "
    "in terms of L_c and K_c? Add those sums over the chunks and divide by "
    "K, staying in logs throughout.",
)


# 3. A Gaussian decoder with its best noise level -----------------------------


def _calibrated_nll(x, mean):
    d = x.shape[-1]
    sigma2 = ((x - mean) ** 2).mean(-1)
    return 0.5 * d * (torch.log(2 * math.pi * sigma2) + 1)


def _calibrated_from_sum(x, mean):
    d = x.shape[-1]
    sigma2 = ((x - mean) ** 2).sum(-1)
    return 0.5 * d * torch.log(2 * math.pi * sigma2) + 0.5 * d


def _calibrated_no_one(x, mean):
    d = x.shape[-1]
    return 0.5 * d * torch.log(2 * math.pi * ((x - mean) ** 2).mean(-1))


def _calibrated_log_sd(x, mean):
    d = x.shape[-1]
    sd = ((x - mean) ** 2).mean(-1).sqrt()
    return 0.5 * d * (torch.log(2 * math.pi * sd) + 1)


def _calibrated_var(x, mean):
    d = x.shape[-1]
    sigma2 = (x - mean).var(-1)  # centred, and divided by d - 1
    return 0.5 * d * (torch.log(2 * math.pi * sigma2) + 1)


def _calibrated_var_biased(x, mean):
    d = x.shape[-1]
    sigma2 = (x - mean).var(-1, correction=0)  # centred, divided by d
    return 0.5 * d * (torch.log(2 * math.pi * sigma2) + 1)


def _calibrated_shared(x, mean):
    d = x.shape[-1]
    sigma2 = ((x - mean) ** 2).mean()
    shape = ((x - mean) ** 2).sum(-1).shape
    return (0.5 * d * (torch.log(2 * math.pi * sigma2) + 1)).expand(shape)


_grey = _uniform(3, 784)
_offset = _uniform(784)
calibrated_gaussian_nll = Exercise(
    name="calibrated_gaussian_nll",
    question="The negative log-likelihood per image of a Gaussian decoder "
    "whose variance σ_x² is set to its maximum-likelihood value for that "
    "image.",
    reference=_calibrated_nll,
    cases=[
        (_grey, (_grey + 0.2 * _normal(3, 784)).clamp(0, 1)),
        (_offset, _offset + 0.1),
        (_uniform(2, 5, 10), _uniform(2, 5, 10)),
        (
            torch.tensor([0.0, 1.0, 0.5, 0.5], dtype=f64),
            torch.tensor([0.1, 0.7, 0.5, 0.9], dtype=f64),
        ),
    ],
    labels=[
        "3 grey images of 784 pixels and noisy reconstructions",
        "one image (784,) with every pixel of the mean 0.1 too bright",
        "images of shape (2, 5, 10): a batch of 2 × 5 images of 10 pixels",
        "x = [0, 1, 0.5, 0.5], mean = [0.1, 0.7, 0.5, 0.9]",
    ],
    mistakes=[
        Mistake(
            "the variance from the summed squared error",
            _calibrated_from_sum,
            "The best σ_x² is the squared error per pixel, ‖x - mean‖² / d: "
            "set the derivative of the negative log-likelihood with respect "
            "to σ_x² to zero.",
        ),
        Mistake(
            "the squared-error term left out",
            _calibrated_no_one,
            "At the best σ_x², the squared-error term ‖x - mean‖² / (2σ_x²) "
            "is not zero: it equals d/2.",
        ),
        Mistake(
            "log σ for log σ²",
            _calibrated_log_sd,
            "The normalizing constant is (d/2) log(2π σ_x²), with the "
            "variance, not the standard deviation.",
        ),
        Mistake(
            "one variance for the whole batch",
            _calibrated_shared,
            "Set σ_x² for each image from its own squared error: average "
            "over the last dimension (the pixels) only.",
        ),
        Mistake(
            "per pixel",
            lambda x, mean: _calibrated_nll(x, mean) / x.shape[-1],
            "Return nats per image, summed over the d pixels, not per pixel.",
        ),
        Mistake(
            "torch.var of the residuals",
            _calibrated_var,
            "σ̂² is the mean of the squared residuals, ‖x − mean‖²/d; "
            "torch.var subtracts the residuals' own mean (and divides by "
            "d − 1), wrong when the reconstruction is off by a constant.",
        ),
        Mistake(
            "torch.var of the residuals, dividing by d",
            _calibrated_var_biased,
            "σ̂² is the mean of the squared residuals, ‖x − mean‖²/d; "
            "torch.var(correction=0) divides by d but still subtracts the "
            "residuals' own mean first, wrong when the reconstruction is off "
            "by a constant.",
        ),
    ],
    fallback="Write −log N(x; mean, σ² I) for one image as a function of σ², "
    "find the σ² where its derivative is zero, and put it back: the result "
    "depends on the image only through its squared error.",
)
