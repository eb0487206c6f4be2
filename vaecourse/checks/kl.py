"""Checks for the exercises of the chapter "KL divergence"."""

from __future__ import annotations

import math

import torch
from torch import distributions as D

from vaecourse.chapters.kl import categorical_kl
from vaecourse.checks import Exercise, Mistake
from vaecourse.prob import log_normal, log_standard_normal

_gen = torch.Generator().manual_seed(0)
f64 = torch.float64


def _simplex(*shape):
    """Random probability vectors along the last dimension."""
    w = torch.rand(*shape, generator=_gen, dtype=f64) + 0.05
    return w / w.sum(-1, keepdim=True)


def _normal(*shape):
    return torch.randn(*shape, generator=_gen, dtype=f64)


# 1. The Jensen-Shannon divergence


def _jsd(p, q):
    m = (p + q) / 2
    return 0.5 * categorical_kl(p, m) + 0.5 * categorical_kl(q, m)


def _naive_kl(p, q):  # p log(p/q) without the convention 0 log 0 = 0
    return (p * torch.log(p / q)).sum(-1)


jensen_shannon = Exercise(
    name="jensen_shannon",
    question="The Jensen-Shannon divergence between categorical "
    "distributions, in nats.",
    reference=_jsd,
    cases=[
        (_simplex(4), _simplex(4)),
        (_simplex(3, 5), _simplex(3, 5)),
        (
            torch.tensor([1.0, 0.0], dtype=f64),
            torch.tensor([0.0, 1.0], dtype=f64),
        ),
        (
            torch.tensor([0.5, 0.5, 0.0], dtype=f64),
            torch.tensor([0.2, 0.3, 0.5], dtype=f64),
        ),
        (
            torch.tensor([0.1, 0.9], dtype=f64),
            torch.tensor([0.1, 0.9], dtype=f64),
        ),
    ],
    labels=[
        "two random distributions over 4 outcomes",
        "a batch of 3 pairs over 5 outcomes (shape (3, 5))",
        "p = [1, 0], q = [0, 1] (disjoint supports)",
        "p = [0.5, 0.5, 0], q = [0.2, 0.3, 0.5] (an outcome p never gives)",
        "p = q = [0.1, 0.9]",
    ],
    mistakes=[
        Mistake(
            "the ½ left out",
            lambda p, q: 2 * _jsd(p, q),
            "Did you leave out the ½? The JSD is the average of the two "
            "divergences to the mixture, so it never exceeds log 2 ≈ 0.693.",
        ),
        Mistake(
            "m = p + q",
            lambda p, q: _jsd(p, q) - math.log(2),
            "Is your mixture m = (p + q) / 2? Without the /2 it is not a "
            "distribution, and every value comes out log 2 too low.",
        ),
        Mistake(
            "divergences from the mixture",
            lambda p, q: (
                0.5 * categorical_kl((p + q) / 2, p)
                + 0.5 * categorical_kl((p + q) / 2, q)
            ),
            "The divergences run from p and from q to the mixture, "
            "KL(p ‖ m) and KL(q ‖ m); in the other direction they are "
            "infinite when p and q do not overlap.",
        ),
        Mistake(
            "0 log 0 gives nan",
            lambda p, q: (
                0.5 * _naive_kl(p, (p + q) / 2)
                + 0.5 * _naive_kl(q, (p + q) / 2)
            ),
            "A zero probability makes p · log(p / m) = 0 · log 0 = nan in "
            "floating point; the convention is 0 log 0 = 0: use "
            "torch.xlogy(p, p / m), or the chapter's categorical_kl.",
        ),
        Mistake(
            "in bits",
            lambda p, q: _jsd(p, q) / math.log(2),
            "Use the natural logarithm: the book measures in nats (the JSD is "
            "at most log 2 ≈ 0.693 nats).",
        ),
        Mistake(
            "summed over the batch",
            lambda p, q: _jsd(p, q).sum(),
            "Sum over the last dimension only (the outcomes): a batch of "
            "pairs gets one divergence per pair.",
        ),
    ],
    fallback="Try p = q, where the JSD is 0, and p = [1, 0], q = [0, 1], "
    "where it is log 2: both divergences run to the mixture m = (p + q) / 2, "
    "and an outcome of probability 0 contributes 0.",
)


# 2. A Monte Carlo estimate of the KL term for a mixture prior


def _log_mixture(z, prior_means, prior_logvars):
    """log p(z) of each sample z (n, d) under the equal mixture of the K
    Gaussians N(m_k, diag exp(logvar_k)): shape (n,)."""
    log_components = log_normal(
        z.unsqueeze(-2), prior_means, prior_logvars
    ).sum(-1)  # (n, K): each sample against each component
    return torch.logsumexp(log_components, -1) - math.log(len(prior_means))


def _mc_kl_mixture(mu, logvar, eps, prior_means, prior_logvars):
    z = mu + torch.exp(0.5 * logvar) * eps
    log_q = log_normal(z, mu, logvar).sum(-1)
    return (log_q - _log_mixture(z, prior_means, prior_logvars)).mean()


def _mc_kl_mixture_with(
    mu, logvar, eps, prior_means, prior_logvars, *, z=None, log_p=None
):
    """The estimate with another sample z, or another function log_p(z)
    for the prior's log-density (n,)."""
    z = mu + torch.exp(0.5 * logvar) * eps if z is None else z
    log_q = log_normal(z, mu, logvar).sum(-1)
    if log_p is None:
        return (log_q - _log_mixture(z, prior_means, prior_logvars)).mean()
    return (log_q - log_p(z)).mean()


def _components(z, prior_means, prior_logvars):
    return log_normal(z.unsqueeze(-2), prior_means, prior_logvars).sum(-1)


def _mc_kl_mean_of_logs(mu, logvar, eps, prior_means, prior_logvars):
    return _mc_kl_mixture_with(
        mu,
        logvar,
        eps,
        prior_means,
        prior_logvars,
        log_p=lambda z: _components(z, prior_means, prior_logvars).mean(-1),
    )


def _mc_kl_naive_exp(mu, logvar, eps, prior_means, prior_logvars):
    return _mc_kl_mixture_with(
        mu,
        logvar,
        eps,
        prior_means,
        prior_logvars,
        log_p=lambda z: torch.log(
            torch.exp(_components(z, prior_means, prior_logvars)).mean(-1)
        ),
    )


def _mc_kl_mixture_per_dimension(mu, logvar, eps, prior_means, prior_logvars):
    def log_p(z):  # a mixture of K components in each dimension separately
        per_dimension = log_normal(z.unsqueeze(-2), prior_means, prior_logvars)
        mixed = torch.logsumexp(per_dimension, -2) - math.log(len(prior_means))
        return mixed.sum(-1)

    return _mc_kl_mixture_with(
        mu, logvar, eps, prior_means, prior_logvars, log_p=log_p
    )


def _mc_kl_sigma_for_logvar(mu, logvar, eps, prior_means, prior_logvars):
    # log_normal given the standard deviations where it takes log-variances
    sigma = torch.exp(0.5 * logvar)
    z = mu + sigma * eps
    log_q = log_normal(z, mu, sigma).sum(-1)
    log_components = log_normal(
        z.unsqueeze(-2), prior_means, torch.exp(0.5 * prior_logvars)
    ).sum(-1)
    log_p = torch.logsumexp(log_components, -1) - math.log(len(prior_means))
    return (log_q - log_p).mean()


def _mc_kl_log_q_per_dimension(mu, logvar, eps, prior_means, prior_logvars):
    # log q left per dimension, (n, d), against log p (n,): broadcasting
    # fails, or pairs the wrong numbers
    z = mu + torch.exp(0.5 * logvar) * eps
    log_q = log_normal(z, mu, logvar)
    return (log_q - _log_mixture(z, prior_means, prior_logvars)).mean()


def _mc_kl_no_log_sigma(mu, logvar, eps, prior_means, prior_logvars):
    z = mu + torch.exp(0.5 * logvar) * eps
    log_q = log_standard_normal(eps).sum(-1)  # the -log σ of each dim missing
    return (log_q - _log_mixture(z, prior_means, prior_logvars)).mean()


def _mc_kl_dimension_means(mu, logvar, eps, prior_means, prior_logvars):
    z = mu + torch.exp(0.5 * logvar) * eps
    log_q = log_normal(z, mu, logvar).mean(-1)
    log_components = log_normal(
        z.unsqueeze(-2), prior_means, prior_logvars
    ).mean(-1)
    log_p = torch.logsumexp(log_components, -1) - math.log(len(prior_means))
    return (log_q - log_p).mean()


def _mc_kl_variance_for_logvar(mu, logvar, eps, prior_means, prior_logvars):
    z = mu + torch.exp(0.5 * logvar) * eps
    log_q = log_normal(z, mu, torch.exp(logvar)).sum(-1)
    log_components = log_normal(
        z.unsqueeze(-2), prior_means, torch.exp(prior_logvars)
    ).sum(-1)
    log_p = torch.logsumexp(log_components, -1) - math.log(len(prior_means))
    return (log_q - log_p).mean()


def _mixture_case(n, d, k, *, spread=2.0):
    """q's mu, logvar and noise, and a random mixture of k components."""
    return (
        _normal(d),
        0.5 * _normal(d),
        _normal(n, d),
        spread * _normal(k, d),
        0.5 * _normal(k, d),
    )


_q_mu, _q_logvar = (
    torch.tensor([1.0, -1.0], dtype=f64),
    torch.tensor([-1.0, 0.5], dtype=f64),
)

monte_carlo_kl_mixture = Exercise(
    name="monte_carlo_kl_mixture",
    question="A Monte Carlo estimate of KL(N(μ, diag σ²) ‖ p), in nats, for a "
    "prior p that is an equal mixture of K Gaussians (no closed form), from "
    "given standard normal noise.",
    reference=_mc_kl_mixture,
    cases=[
        _mixture_case(6, 3, 4),
        _mixture_case(10, 1, 2),
        (
            _normal(2),
            _normal(2),
            _normal(5, 2),
            torch.zeros(1, 2, dtype=f64),
            torch.zeros(1, 2, dtype=f64),
        ),
        (
            torch.tensor([40.0, -40.0], dtype=f64),
            torch.zeros(2, dtype=f64),
            _normal(4, 2),
            _normal(3, 2),
            torch.zeros(3, 2, dtype=f64),
        ),
        (
            _q_mu,
            _q_logvar,
            _normal(8, 2),
            torch.stack([_q_mu, _q_mu + 20]),
            torch.stack([_q_logvar, torch.zeros(2, dtype=f64)]),
        ),
    ],
    labels=[
        "d = 3 dimensions, K = 4 components, 6 samples",
        "d = 1, K = 2 components, 10 samples",
        "a single component N(0, I) (the VAE's prior), d = 2, 5 samples",
        "q centred at (40, -40), far from 3 components near 0 (their "
        "log-densities about -1,500 nats)",
        "q equal to the first of two components 20 apart in each dimension "
        "(an estimate close to log 2)",
    ],
    mistakes=[
        Mistake(
            "log K left out",
            lambda mu, logvar, eps, prior_means, prior_logvars: (
                _mc_kl_mixture(mu, logvar, eps, prior_means, prior_logvars)
                - math.log(len(prior_means))
            ),
            "The components have weight 1/K: log p(z) = logsumexp over k of "
            "log N_k(z), minus log K. Without the log K your estimate is log "
            "K too small.",
        ),
        Mistake(
            "the mean of the component log-densities",
            _mc_kl_mean_of_logs,
            "log p(z) is the log of the average of the K component "
            "densities, not the average of their logs (which is smaller, by "
            "Jensen's inequality): use torch.logsumexp over the components, "
            "minus log K.",
        ),
        Mistake(
            "exp of the log-densities underflows",
            _mc_kl_naive_exp,
            "Far from every component the densities exp(log N_k(z)) underflow "
            "to 0 and their log is -inf: stay with the log-densities and "
            "combine them with torch.logsumexp over the components.",
        ),
        Mistake(
            "a mixture in each dimension",
            _mc_kl_mixture_per_dimension,
            "Each component is a Gaussian over the whole vector z: sum its "
            "log-density over the d dimensions first, then mix the K "
            "components; mixing each dimension separately is another prior.",
        ),
        Mistake(
            "eps used as the sample",
            lambda mu, logvar, eps, prior_means, prior_logvars: (
                _mc_kl_mixture_with(
                    mu, logvar, eps, prior_means, prior_logvars, z=eps
                )
            ),
            "The samples must come from q, the first argument: "
            "z = mu + σ · eps, with σ = exp(logvar / 2); eps itself is a "
            "sample of N(0, I).",
        ),
        Mistake(
            "the variance used as the standard deviation",
            lambda mu, logvar, eps, prior_means, prior_logvars: (
                _mc_kl_mixture_with(
                    mu,
                    logvar,
                    eps,
                    prior_means,
                    prior_logvars,
                    z=mu + torch.exp(logvar) * eps,
                )
            ),
            "The standard deviation is σ = exp(logvar / 2): exp(logvar) "
            "is the variance.",
        ),
        Mistake(
            "σ passed for logvar",
            _mc_kl_sigma_for_logvar,
            "log_normal takes the log-variance as its third argument, not "
            "the standard deviation σ.",
        ),
        Mistake(
            "σ² passed for logvar",
            _mc_kl_variance_for_logvar,
            "log_normal takes the log-variance as its third argument: you "
            "passed the variance σ² = exp(logvar).",
        ),
        Mistake(
            "log σ left out of log q",
            _mc_kl_no_log_sigma,
            "log q(z) = Σ_j [log N(ε_j; 0, 1) - log σ_j]: z = mu + σ · eps "
            "spreads the density by σ; or use log_normal(z, mu, logvar).",
        ),
        Mistake(
            "summed over the samples",
            lambda *args: _mc_kl_mixture(*args) * args[2].shape[0],
            "Average over the n samples (the rows of eps), do not sum: the "
            "estimate must not scale with n.",
        ),
        Mistake(
            "a mean over the dimensions",
            _mc_kl_dimension_means,
            "Sum the log-densities over the d dimensions, do not average: "
            "the log-density of a vector of independent coordinates is the "
            "sum of theirs.",
        ),
        Mistake(
            "the sign flipped",
            lambda *args: -_mc_kl_mixture(*args),
            "KL(q ‖ p) averages log q(z) - log p(z) over samples of q; yours "
            "has the opposite sign.",
        ),
        Mistake(
            "log q not summed over the dimensions",
            _mc_kl_log_q_per_dimension,
            "log q(z) and log p(z) must each be one number per sample, shape "
            "(n,): sum log_normal over the d dimensions (it is per "
            "dimension), and compare every sample with every component, "
            "z[:, None, :] against the (K, d) means.",
        ),
    ],
    fallback="Try the case of a single component N(0, I): your estimate must "
    "equal the mean over the samples of Σ_j [log q(z_j) - log p(z_j)] for the "
    "standard prior. Then check that log p(z) is one number per sample, the "
    "log of the average of the K component densities.",
)


# 3. KL between categorical distributions given by logits


def _kl_logits(a, b):
    log_p, log_q = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


kl_from_logits = Exercise(
    name="kl_from_logits",
    question="KL between two categorical distributions given by their logits, "
    "computed stably.",
    reference=_kl_logits,
    cases=[
        (_normal(5), _normal(5)),
        (_normal(2, 3, 4), _normal(2, 3, 4)),
        (
            torch.tensor([1.0, 2.0, 3.0], dtype=f64),
            torch.tensor([11.0, 12.0, 13.0], dtype=f64),
        ),
        (
            torch.tensor([1000.0, 0.0], dtype=f64),
            torch.tensor([0.0, 1000.0], dtype=f64),
        ),
    ],
    labels=[
        "two random logit vectors of 5 outcomes",
        "a batch of logits of shape (2, 3, 4)",
        "logits [1, 2, 3] against [11, 12, 13] (the same distribution)",
        "logits [1000, 0] against [0, 1000]",
    ],
    mistakes=[
        Mistake(
            "logits used as log-probabilities",
            lambda a, b: (torch.softmax(a, -1) * (a - b)).sum(-1),
            "Logits are log-probabilities only up to a constant: normalize "
            "them with torch.log_softmax before taking the difference.",
        ),
        Mistake(
            "log of softmax",
            lambda a, b: (
                torch.softmax(a, -1)
                * (
                    torch.log(torch.softmax(a, -1))
                    - torch.log(torch.softmax(b, -1))
                )
            ).sum(-1),
            "log(softmax(·)) underflows to -inf for very unlikely outcomes; "
            "torch.log_softmax computes the same thing without underflow.",
        ),
        Mistake(
            "p and q swapped",
            lambda a, b: _kl_logits(b, a),
            "Did you swap the two distributions? KL(p ‖ q) averages over p, "
            "the distribution of the first logits.",
        ),
        Mistake(
            "torch.distributions' KL",
            lambda a, b: D.kl_divergence(
                D.Categorical(logits=a), D.Categorical(logits=b)
            ),
            "torch.distributions.kl_divergence sets a term to inf where "
            "softmax(b) rounds to 0, as it does at a logit gap of 1000; "
            "compute it from log_softmax yourself.",
        ),
        Mistake(
            "a mean over outcomes",
            lambda a, b: _kl_logits(a, b) / a.shape[-1],
            "Sum over the outcomes (the last dimension); do not average.",
        ),
    ],
    fallback="Stay with log-probabilities from the logits, never forming "
    "exp(1000); try logits [1, 2, 3] against [11, 12, 13], the same "
    "distribution, where the divergence is 0.",
)
