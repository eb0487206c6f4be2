"""Checks for the exercises of the chapter "KL divergence"."""

from __future__ import annotations

import math

import torch

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
    "distributions.",
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
            "summed over the batch",
            lambda p, q: _jsd(p, q).sum(),
            "Sum over the last dimension only (the outcomes): a batch of "
            "pairs gets one divergence per pair.",
        ),
    ],
    fallback="Write it as ½ KL(p ‖ m) + ½ KL(q ‖ m) with m = (p + q) / 2.",
)


# 2. A Monte Carlo estimate of the VAE's KL term


def _mc_kl_standard(mu, logvar, eps):
    z = mu + torch.exp(0.5 * logvar) * eps
    log_ratio = log_normal(z, mu, logvar) - log_standard_normal(z)
    return log_ratio.sum(-1).mean()


def _mc_kl_variance_as_sd(mu, logvar, eps):
    z = mu + torch.exp(logvar) * eps
    return (log_normal(z, mu, logvar) - log_standard_normal(z)).sum(-1).mean()


def _mc_kl_no_log_sigma(mu, logvar, eps):
    z = mu + torch.exp(0.5 * logvar) * eps
    return (-0.5 * eps**2 + 0.5 * z**2).sum(-1).mean()


monte_carlo_kl_standard = Exercise(
    name="monte_carlo_kl_standard",
    question="A Monte Carlo estimate of KL(N(μ, diag σ²) ‖ N(0, I)) from "
    "given standard normal noise.",
    reference=_mc_kl_standard,
    cases=[
        (_normal(3), _normal(3), _normal(6, 3)),
        (_normal(1), _normal(1), _normal(10, 1)),
        (torch.zeros(2, dtype=f64), torch.zeros(2, dtype=f64), _normal(4, 2)),
        (
            torch.tensor([2.0, -1.0], dtype=f64),
            torch.tensor([-3.0, 1.0], dtype=f64),
            _normal(5, 2),
        ),
    ],
    labels=[
        "mu and logvar of 3 dimensions, eps of shape (6, 3)",
        "one dimension, eps of shape (10, 1)",
        "mu = 0, logvar = 0 (q is the prior), eps of shape (4, 2)",
        "mu = [2, -1], logvar = [-3, 1], eps of shape (5, 2)",
    ],
    mistakes=[
        Mistake(
            "the variance used as the standard deviation",
            _mc_kl_variance_as_sd,
            "The standard deviation is σ = exp(logvar / 2): exp(logvar) "
            "is the variance.",
        ),
        Mistake(
            "no sum over dimensions",
            lambda mu, logvar, eps: (
                _mc_kl_standard(mu, logvar, eps) / mu.shape[-1]
            ),
            "Sum the log-ratio over the latent dimensions (the divergences of "
            "independent dimensions add up), then average over the samples.",
        ),
        Mistake(
            "the sign flipped",
            lambda mu, logvar, eps: -_mc_kl_standard(mu, logvar, eps),
            "KL(q ‖ p) averages log q(z) - log p(z) over samples of q; "
            "yours has the opposite sign.",
        ),
        Mistake(
            "samples of the prior",
            lambda mu, logvar, eps: (
                (log_normal(eps, mu, logvar) - log_standard_normal(eps))
                .sum(-1)
                .mean()
            ),
            "The samples must come from q, the first argument: "
            "z = mu + σ · eps, not eps itself (that is a sample of the "
            "prior).",
        ),
        Mistake(
            "log σ left out of log q",
            _mc_kl_no_log_sigma,
            "log q(z) contains -log σ per dimension (part of the normalizing "
            "constant of N(mu, σ²)); only the log 2π terms cancel.",
        ),
    ],
    fallback="Draw z = mu + exp(logvar / 2) · eps, then average "
    "Σ_j [log q(z_j) - log p(z_j)] over the rows of eps.",
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
            "a mean over outcomes",
            lambda a, b: _kl_logits(a, b) / a.shape[-1],
            "Sum over the outcomes (the last dimension); do not average.",
        ),
    ],
    fallback="Compute log p and log q with torch.log_softmax, then sum "
    "p · (log p - log q) over the last dimension.",
)
