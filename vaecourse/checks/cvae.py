"""Checks for the exercises of the chapter "The conditional VAE"."""

from __future__ import annotations

import math

import torch

from vaecourse.chapters.kl import gaussian_kl, gaussian_kl_standard
from vaecourse.checks import Exercise, Mistake

_gen = torch.Generator().manual_seed(0)
f64 = torch.float64


def _normal(*shape):
    return torch.randn(*shape, generator=_gen, dtype=f64)


def _simplex(*shape):
    """Random probability vectors along the last dimension."""
    w = torch.rand(*shape, generator=_gen, dtype=f64) + 0.05
    return w / w.sum(-1, keepdim=True)


def _labels(n, classes=10):
    return torch.randint(0, classes, (n,), generator=_gen)


# 1. The CVAE as a classifier: Bayes's rule over the classes ----------------


def _class_posterior(log_lik, log_prior):
    return torch.softmax(log_lik + log_prior, -1)


def _posterior_by_exp(log_lik, log_prior):
    joint = torch.exp(log_lik + log_prior)
    return joint / joint.sum(-1, keepdim=True)


class_posterior = Exercise(
    name="class_posterior",
    question="The class posterior p(y|x) from the per-class log-likelihoods "
    "log p(x|y) of a conditional model and the label prior.",
    reference=_class_posterior,
    cases=[
        (-100 + 5 * _normal(3, 10), _simplex(10).log()),
        (
            -800 + 3 * _normal(2, 10),
            torch.full((10,), -math.log(10), dtype=f64),
        ),
        (
            torch.tensor([[-90.0, -90.0]], dtype=f64),
            torch.tensor([0.8, 0.2], dtype=f64).log(),
        ),
        (-95 + 2 * _normal(10), _simplex(10).log()),
    ],
    labels=[
        "3 images, 10 classes, a random label prior",
        "2 images whose log-likelihoods are near −800 nats (exp underflows "
        "to 0), a uniform prior",
        "one image, two classes with the same likelihood, prior [0.8, 0.2]",
        "a single image as a vector of 10 log-likelihoods",
    ],
    mistakes=[
        Mistake(
            "the prior left out",
            lambda log_lik, log_prior: torch.softmax(log_lik, -1),
            "Did you leave out the prior? Bayes's rule weighs each class's "
            "likelihood by p(y): with equal likelihoods the posterior is the "
            "prior, not uniform.",
        ),
        Mistake(
            "divided by the prior",
            lambda log_lik, log_prior: torch.softmax(log_lik - log_prior, -1),
            "The prior multiplies the likelihood, p(y|x) ∝ p(x|y) p(y); yours "
            "divides by it (check the sign of log_prior).",
        ),
        Mistake(
            "normalized over the images",
            lambda log_lik, log_prior: torch.softmax(log_lik + log_prior, 0),
            "Normalize over the classes, the last dimension: each image gets "
            "its own distribution over the classes, whose values sum to 1.",
        ),
        Mistake(
            "log-probabilities returned",
            lambda log_lik, log_prior: torch.log_softmax(
                log_lik + log_prior, -1
            ),
            "Return probabilities, not their logarithms: each row of the "
            "result should sum to 1.",
        ),
        Mistake(
            "exp before normalizing",
            _posterior_by_exp,
            "exp(−800) underflows to 0, and 0 / 0 is nan: subtract the "
            "largest log value before taking exp (torch.softmax does it for "
            "you).",
        ),
    ],
    fallback="Work in logs: log p(x|y) + log p(y) is log p(y|x) up to a "
    "constant per image, and the constant is whatever makes the "
    "probabilities sum to 1 over the classes.",
)


# 2. A learned prior per class (Sohn et al.): the KL term -------------------


def _conditional_prior_kl(mu, logvar, y, prior_mu, prior_logvar):
    return gaussian_kl(mu, logvar, prior_mu[y], prior_logvar[y]).sum(-1)


def _kl_log_term_flipped(mu, logvar, y, prior_mu, prior_logvar):
    m, lv = prior_mu[y], prior_logvar[y]
    kl = 0.5 * (
        torch.exp(logvar - lv)
        + (mu - m) ** 2 * torch.exp(-lv)
        - 1
        + logvar
        - lv
    )
    return kl.sum(-1)


def _kl_variance_ratio_inverted(mu, logvar, y, prior_mu, prior_logvar):
    m, lv = prior_mu[y], prior_logvar[y]
    kl = 0.5 * (
        torch.exp(lv - logvar)
        + (mu - m) ** 2 * torch.exp(-lv)
        - 1
        + lv
        - logvar
    )
    return kl.sum(-1)


def _kl_first_rows(mu, logvar, y, prior_mu, prior_logvar):
    b = len(y)
    return gaussian_kl(mu, logvar, prior_mu[:b], prior_logvar[:b]).sum(-1)


def _kl_mean_not_scaled(mu, logvar, y, prior_mu, prior_logvar):
    m, lv = prior_mu[y], prior_logvar[y]
    kl = 0.5 * (torch.exp(logvar - lv) + (mu - m) ** 2 - 1 + lv - logvar)
    return kl.sum(-1)


_y_all = torch.arange(10)
_prior_mu_own, _prior_logvar_own = _normal(10, 3), _normal(10, 3)
_y_own = _labels(4)

conditional_prior_kl = Exercise(
    name="conditional_prior_kl",
    question="The KL term of a CVAE with a learned Gaussian prior per class: "
    "KL(q(z|x, y) ‖ N(m_y, diag s_y²)), per image.",
    reference=_conditional_prior_kl,
    cases=[
        (
            _normal(4, 3),
            _normal(4, 3),
            _labels(4),
            _normal(10, 3),
            _normal(10, 3),
        ),
        (
            _normal(10, 2),
            _normal(10, 2),
            _y_all,
            _normal(10, 2),
            _normal(10, 2),
        ),
        (
            _normal(3, 4),
            _normal(3, 4),
            _labels(3),
            torch.zeros(10, 4, dtype=f64),
            torch.zeros(10, 4, dtype=f64),
        ),
        (
            _prior_mu_own[_y_own],
            _prior_logvar_own[_y_own],
            _y_own,
            _prior_mu_own,
            _prior_logvar_own,
        ),
        (
            _normal(2, 2),
            torch.full((2, 2), -6.0, dtype=f64),
            _labels(2),
            _normal(10, 2),
            torch.full((10, 2), 3.0, dtype=f64),
        ),
    ],
    labels=[
        "4 images, 3 latent dimensions, 10 classes",
        "one image of each class (y = 0, 1, ..., 9), 2 latent dimensions",
        "every class's prior N(0, I) (the chapter's CVAE)",
        "each posterior equal to its class's prior (KL = 0)",
        "a narrow posterior (logvar = −6) under wide priors (logvar = 3)",
    ],
    mistakes=[
        Mistake(
            "q and p swapped",
            lambda mu, logvar, y, prior_mu, prior_logvar: gaussian_kl(
                prior_mu[y], prior_logvar[y], mu, logvar
            ).sum(-1),
            "Did you swap the two distributions? The KL term of the ELBO is "
            "KL(q ‖ p): the encoder's posterior first, the prior of the "
            "image's class second.",
        ),
        Mistake(
            "the standard normal prior",
            lambda mu, logvar, y, prior_mu, prior_logvar: gaussian_kl_standard(
                mu, logvar
            ).sum(-1),
            "That is the KL to N(0, I), the prior of the chapter's CVAE; here "
            "each image's posterior is compared with the prior of its own "
            "class, row y of prior_mu and prior_logvar.",
        ),
        Mistake(
            "the log-variance term flipped",
            _kl_log_term_flipped,
            "Check the log term: per dimension it is + log s² − log σ², the "
            "prior's log-variance minus the posterior's.",
        ),
        Mistake(
            "the variance ratio inverted",
            _kl_variance_ratio_inverted,
            "Check the variance terms: the ratio is σ² / s², the posterior's "
            "variance over the prior's, and the log term log s² − log σ².",
        ),
        Mistake(
            "the squared distance not divided by the prior's variance",
            _kl_mean_not_scaled,
            "The squared distance between the means is measured in units of "
            "the prior's variance: (μ − m)² / s².",
        ),
        Mistake(
            "the first B rows of the prior tables",
            _kl_first_rows,
            "Image b is compared with the prior of its own class, row y[b] of "
            "prior_mu and prior_logvar (index them with y), not with row b.",
        ),
        Mistake(
            "averaged over the latent dimensions",
            lambda mu, logvar, y, prior_mu, prior_logvar: gaussian_kl(
                mu, logvar, prior_mu[y], prior_logvar[y]
            ).mean(-1),
            "Sum the KL over the latent dimensions: the KL between diagonal "
            "Gaussians is the sum of the KLs of their dimensions.",
        ),
    ],
    fallback="Write KL(N(μ, σ²) ‖ N(m, s²)) for one dimension (the KL "
    "chapter derives it for two univariate Gaussians), check that it is 0 "
    "when the two are equal, then give each image the m and s² of its own "
    "class.",
)


# 3. Unlabelled images: the bound of Kingma et al.'s model M2 ---------------


def _unlabelled_bound(neg_elbo, class_logits):
    log_q = torch.log_softmax(class_logits, -1)
    classes = neg_elbo.shape[-1]
    return (log_q.exp() * (neg_elbo + math.log(classes) + log_q)).sum(-1)


def _q_and_entropy(class_logits):
    log_q = torch.log_softmax(class_logits, -1)
    q = log_q.exp()
    return q, -(q * log_q).sum(-1)


def _bound_plus_entropy(neg_elbo, class_logits):
    q, entropy = _q_and_entropy(class_logits)
    log_c = math.log(neg_elbo.shape[-1])
    return (q * (neg_elbo + log_c)).sum(-1) + entropy


def _bound_no_entropy(neg_elbo, class_logits):
    q, _ = _q_and_entropy(class_logits)
    return (q * (neg_elbo + math.log(neg_elbo.shape[-1]))).sum(-1)


def _bound_no_prior(neg_elbo, class_logits):
    q, entropy = _q_and_entropy(class_logits)
    return (q * neg_elbo).sum(-1) - entropy


def _bound_unweighted(neg_elbo, class_logits):
    _, entropy = _q_and_entropy(class_logits)
    return neg_elbo.mean(-1) + math.log(neg_elbo.shape[-1]) - entropy


def _bound_softmax_over_images(neg_elbo, class_logits):
    log_q = torch.log_softmax(class_logits, 0)
    classes = neg_elbo.shape[-1]
    return (log_q.exp() * (neg_elbo + math.log(classes) + log_q)).sum(-1)


def _bound_log_of_softmax(neg_elbo, class_logits):
    q = torch.softmax(class_logits, -1)
    classes = neg_elbo.shape[-1]
    return (q * (neg_elbo + math.log(classes) + torch.log(q))).sum(-1)


_neg_elbo_posterior = 100 + 5 * _normal(3, 10)
_sure = torch.zeros(2, 10, dtype=f64)
_sure[0, 3], _sure[1, 7] = 1000.0, 1000.0

unlabelled_bound = Exercise(
    name="unlabelled_bound",
    question="The bound on −log p(x) of an unlabelled image in Kingma et "
    "al.'s model M2: E_q(y|x)[−ELBO(x|y) + log C] − H(q(y|x)).",
    reference=_unlabelled_bound,
    cases=[
        (100 + 10 * _normal(4, 10), 2 * _normal(4, 10)),
        (100 + 10 * _normal(2, 10), _sure),
        (100 + 10 * _normal(3, 10), torch.zeros(3, 10, dtype=f64)),
        (_neg_elbo_posterior, -_neg_elbo_posterior),
        (90 + 5 * _normal(5, 2), 3 * _normal(5, 2)),
    ],
    labels=[
        "4 images, 10 classes, random logits",
        "2 images, q(y|x) certain of one class (logits 1000 against 0)",
        "3 images, q(y|x) uniform (all logits 0)",
        "3 images, q(y|x) equal to the posterior that the ELBOs give "
        "(logits = −neg_elbo)",
        "5 images, 2 classes",
    ],
    mistakes=[
        Mistake(
            "the entropy added",
            _bound_plus_entropy,
            "Check the sign of the entropy: the bound is "
            "E_q[−log p(x, y) + log q(y|x)], and E_q[log q(y|x)] = −H(q), so "
            "the entropy is subtracted from the expected cost.",
        ),
        Mistake(
            "the entropy left out",
            _bound_no_entropy,
            "You left out the entropy of q(y|x): without − H(q) the bound is "
            "smallest for a q(y|x) certain of one class, however unsure the "
            "ELBOs are.",
        ),
        Mistake(
            "the label prior left out",
            _bound_no_prior,
            "−ELBO(x|y) bounds −log p(x|y); the bound needs −log p(x, y) = "
            "−log p(x|y) − log p(y), and with the uniform label prior "
            "−log p(y) = log C.",
        ),
        Mistake(
            "the classes averaged, not weighted by q(y|x)",
            _bound_unweighted,
            "Weigh each class's −ELBO by q(y|x), the classifier's "
            "probability, instead of averaging over the classes.",
        ),
        Mistake(
            "softmax over the images",
            _bound_softmax_over_images,
            "Normalize the logits over the classes (the last dimension): "
            "q(y|x) is a distribution over the classes of each image.",
        ),
        Mistake(
            "the log of softmax",
            _bound_log_of_softmax,
            "When q(y|x) is exactly 0 for a class, q log q = 0 · (−inf) = "
            "nan: compute log q(y|x) with torch.log_softmax.",
        ),
    ],
    fallback="Both terms are expectations under q(y|x): write each as a sum "
    "over the classes (the last dimension) weighted by q(y|x), with log "
    "q(y|x) from the logits.",
)
