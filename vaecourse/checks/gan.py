"""Checks for the exercises of the chapter "Generative adversarial
networks"."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vaecourse.chapters.gan import discriminator_loss
from vaecourse.checks import Exercise, Mistake

_gen = torch.Generator().manual_seed(0)
f64 = torch.float64


def _normal(*shape, scale=1.0):
    return scale * torch.randn(*shape, generator=_gen, dtype=f64)


def _uniform(*shape):
    return torch.rand(*shape, generator=_gen, dtype=f64)


def _tensor(values):
    return torch.tensor(values, dtype=f64)


def _naive_log_sigmoid(
    logits,
):  # log(sigmoid(l)): log(0) = -inf once it rounds
    return torch.log(torch.sigmoid(logits))


# 1. The Jensen-Shannon divergence that a discriminator measures -------------


def _jsd_from_logits(real_logits, fake_logits):
    # V(D, G) = -discriminator_loss; with D = D*, V = -log 4 + 2 JSD
    return (math.log(4) - discriminator_loss(real_logits, fake_logits)) / 2


def _jsd_concatenated(real_logits, fake_logits):
    logits = torch.cat([real_logits.flatten(), fake_logits.flatten()])
    labels = torch.cat(
        [torch.ones(real_logits.numel()), torch.zeros(fake_logits.numel())]
    ).to(logits)
    bce = F.binary_cross_entropy_with_logits(logits, labels)
    return (math.log(4) - 2 * bce) / 2


jsd_from_logits = Exercise(
    name="jsd_from_logits",
    question="The Jensen-Shannon divergence that a discriminator's logits on "
    "real and generated images estimate, through V(D*, G) = -log 4 + 2 JSD.",
    reference=_jsd_from_logits,
    cases=[
        (_normal(8, scale=2.0), _normal(8, scale=2.0)),
        (_normal(5, scale=2.0) + 1, _normal(12, scale=2.0) - 1),
        (torch.zeros(6, dtype=f64), torch.zeros(6, dtype=f64)),
        (_tensor([40.0, 50.0, 60.0]), _tensor([-40.0, -50.0])),
        (_tensor([3.0, -800.0, 2.0]), _tensor([-2.0, -1.0, -3.0])),
        (_normal(4, 3, scale=2.0), _normal(4, 3, scale=2.0)),
    ],
    labels=[
        "8 random real and 8 random fake logits",
        "5 real logits and 12 fake logits (batches of different sizes)",
        "every logit 0 (D = 1/2 everywhere: a coin flip)",
        "real logits [40, 50, 60], fake [-40, -50] (a perfect discriminator)",
        "real logits [3, -800, 2], fake [-2, -1, -3] (one real image "
        "rejected with certainty)",
        "logits of shape (4, 3) for both",
    ],
    mistakes=[
        Mistake(
            "log 4 left out",
            lambda r, f: -discriminator_loss(r, f) / 2,
            "At a coin flip (every logit 0) the divergence is 0: did you "
            "leave out the log 4 in V(D*, G) = -log 4 + 2 JSD?",
        ),
        Mistake(
            "the ½ left out",
            lambda r, f: 2 * _jsd_from_logits(r, f),
            "V(D*, G) = -log 4 + 2 JSD: after adding log 4, divide by 2. A "
            "perfect discriminator should give log 2 ≈ 0.693, the largest "
            "value the JSD takes.",
        ),
        Mistake(
            "the loss taken as V",
            lambda r, f: (math.log(4) + discriminator_loss(r, f)) / 2,
            "The chapter's discriminator_loss is -V, the value with its sign "
            "flipped (D minimises the loss and maximises V); a better "
            "discriminator must give a larger divergence, not a smaller one.",
        ),
        Mistake(
            "one mean over the concatenated batch",
            _jsd_concatenated,
            "Average the real and the fake terms separately, as in V: one "
            "mean over the concatenated batch (as BCEWithLogitsLoss on "
            "torch.cat) weights the larger batch more when the sizes differ.",
        ),
        Mistake(
            "log of sigmoid",
            lambda r, f: (
                (
                    math.log(4)
                    + _naive_log_sigmoid(r).mean()
                    + _naive_log_sigmoid(-f).mean()
                )
                / 2
            ),
            "torch.log(torch.sigmoid(l)) is log(0) = -inf once sigmoid(l) "
            "rounds to 0 (l = -800); compute log D = F.logsigmoid(l) and "
            "log(1 - D) = F.logsigmoid(-l) from the logits.",
        ),
    ],
    fallback="Check two cases by hand: every logit 0 (a coin flip) must give "
    "0, and a perfect discriminator log 2; write log D and log(1 − D) from "
    "the logits with F.logsigmoid.",
)


# 2. One-sided label smoothing ----------------------------------------------


def _smoothed_loss(real_logits, fake_logits, real_label):
    # real images get the target real_label < 1, fakes keep the target 0
    targets = torch.full_like(real_logits, real_label)
    real_term = F.binary_cross_entropy_with_logits(real_logits, targets)
    return real_term + F.softplus(fake_logits).mean()


def _smoothed_concatenated(real_logits, fake_logits, real_label):
    logits = torch.cat([real_logits.flatten(), fake_logits.flatten()])
    targets = torch.cat(
        [
            torch.full((real_logits.numel(),), real_label),
            torch.zeros(fake_logits.numel()),
        ]
    ).to(logits)
    return F.binary_cross_entropy_with_logits(logits, targets)


def _bce(logits, target):
    return F.binary_cross_entropy_with_logits(
        logits, torch.full_like(logits, target)
    )


smoothed_discriminator_loss = Exercise(
    name="smoothed_discriminator_loss",
    question="The discriminator's loss with one-sided label smoothing: real "
    "images get the target real_label (0.9) instead of 1, fakes keep 0.",
    reference=_smoothed_loss,
    cases=[
        (_normal(8, scale=2.0), _normal(8, scale=2.0), 0.9),
        (_normal(5, scale=2.0), _normal(9, scale=2.0), 0.8),
        (_normal(6, scale=2.0), _normal(6, scale=2.0), 1.0),
        (_tensor([800.0, 2.0, -1.0]), _tensor([-3.0, 800.0]), 0.9),
        (_normal(2, 5, scale=2.0), _normal(2, 5, scale=2.0), 0.9),
    ],
    labels=[
        "8 random real and 8 random fake logits, real_label = 0.9",
        "5 real and 9 fake logits, real_label = 0.8",
        "random logits, real_label = 1 (no smoothing)",
        "real logits [800, 2, -1], fake [-3, 800], real_label = 0.9 (very "
        "confident logits)",
        "logits of shape (2, 5), real_label = 0.9",
    ],
    mistakes=[
        Mistake(
            "both sides smoothed",
            lambda r, f, s: _bce(r, s) + _bce(f, 1 - s),
            "Smooth only the real side: the fakes keep the target 0. With a "
            "fake target above 0, the best discriminator no longer rejects "
            "fakes where the data are absent, so it stops pushing the "
            "generator away from there.",
        ),
        Mistake(
            "the two weights swapped",
            lambda r, f, s: _bce(r, 1 - s) + F.softplus(f).mean(),
            "With the target s for a real image its loss is -[s log D + "
            "(1 - s) log(1 - D)]: the large weight s goes with log D. With "
            "s = 1 yours should equal the chapter's discriminator_loss.",
        ),
        Mistake(
            "the real term scaled instead",
            lambda r, f, s: s * F.softplus(-r).mean() + F.softplus(f).mean(),
            "Smoothing changes the target, not the weight: the real images' "
            "loss is -[s log D + (1 - s) log(1 - D)]. Did you multiply "
            "-log D by s and leave out the (1 - s) log(1 - D) term?",
        ),
        Mistake(
            "log of sigmoid",
            lambda r, f, s: (
                -(
                    s * _naive_log_sigmoid(r)
                    + (1 - s) * _naive_log_sigmoid(-r)
                ).mean()
                - _naive_log_sigmoid(-f).mean()
            ),
            "torch.log(torch.sigmoid(l)) is log(0) = -inf once sigmoid(l) "
            "rounds to 0 or 1 (logit 800), and 1 - D rounds the same way; "
            "write both logarithms from the logit with F.logsigmoid, or use "
            "F.binary_cross_entropy_with_logits with the target.",
        ),
        Mistake(
            "summed over the batch",
            lambda r, f, s: (
                r.numel() * _bce(r, s) + f.numel() * F.softplus(f).mean()
            ),
            "Average over the images of each batch, as the chapter's "
            "discriminator_loss does; a sum grows with the batch size.",
        ),
        Mistake(
            "one mean over the concatenated batch",
            _smoothed_concatenated,
            "One mean over the real and fake logits together (BCEWithLogits"
            "Loss on torch.cat) is not the sum of the two means: with batches "
            "of equal size it is half the loss, and with different sizes it "
            "weights the larger batch more. Average each batch on its own, "
            "then add.",
        ),
    ],
    fallback="With real_label = 1 your function must give the chapter's "
    "discriminator_loss; then change only the real images' target, and "
    "write every logarithm from the logits.",
)


# 3. The gradient penalty of WGAN-GP ----------------------------------------

_W16 = _normal(16, 3, scale=0.5)
_W6 = _normal(6, 3, scale=0.5)
_UNIT = _normal(6)
_UNIT = _UNIT / _UNIT.norm()


def _critic_quadratic(x):
    """f(x) = ½ ‖x‖² per sample: its gradient at x is x itself."""
    return 0.5 * (x**2).flatten(1).sum(1)


def _critic_tanh(x):
    """A small fixed nonlinear critic: Σ_k tanh(x · w_k) per sample."""
    flat = x.flatten(1)
    weights = _W16 if flat.shape[1] == 16 else _W6
    return torch.tanh(flat @ weights).sum(1)


def _critic_linear(x):
    """f(x) = x · w with ‖w‖ = 1: the gradient has norm 1 everywhere."""
    return x.flatten(1) @ _UNIT


def _gradient_norms(critic, points):
    points = points.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(points).sum(), points)
    return grad.flatten(1).norm(dim=1), grad


def _gradient_penalty(critic, real, fake, u):
    x_hat = u * real + (1 - u) * fake
    norms, _ = _gradient_norms(critic, x_hat)
    return ((norms - 1) ** 2).mean()


def _penalty_mean_score(critic, real, fake, u):
    x_hat = (u * real + (1 - u) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).mean(), x_hat)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def _penalty_batch_norm(critic, real, fake, u):
    _, grad = _gradient_norms(critic, u * real + (1 - u) * fake)
    return (grad.norm() - 1) ** 2


def _penalty_last_dim(critic, real, fake, u):
    _, grad = _gradient_norms(critic, u * real + (1 - u) * fake)
    return ((grad.norm(dim=-1) - 1) ** 2).mean()


gradient_penalty = Exercise(
    name="gradient_penalty",
    question="The gradient penalty of WGAN-GP: the mean of (‖∇ critic(x̂)‖ - "
    "1)² at the points x̂ = u·real + (1 - u)·fake.",
    reference=_gradient_penalty,
    cases=[
        (_critic_quadratic, _normal(4, 6), _normal(4, 6), _uniform(4, 1)),
        (_critic_tanh, _normal(5, 6), _normal(5, 6), _uniform(5, 1)),
        (
            _critic_tanh,
            _normal(3, 1, 4, 4),
            _normal(3, 1, 4, 4),
            _uniform(3, 1, 1, 1),
        ),
        (
            _critic_quadratic,
            _normal(3, 6, scale=0.1),
            _normal(3, 6, scale=0.1),
            _uniform(3, 1),
        ),
        (_critic_linear, _normal(4, 6), _normal(4, 6), _uniform(4, 1)),
    ],
    labels=[
        "the critic ½‖x‖², 4 real and 4 fake vectors of 6 numbers",
        "a fixed tanh critic, 5 pairs of vectors of 6 numbers",
        "a fixed tanh critic on images of shape (3, 1, 4, 4)",
        "the critic ½‖x‖² near 0 (gradient norms below 1)",
        "a linear critic with a unit weight vector (every gradient norm is 1)",
    ],
    mistakes=[
        Mistake(
            "the norm pulled to 0",
            lambda c, r, f, u: (
                _gradient_norms(c, u * r + (1 - u) * f)[0] ** 2
            ).mean(),
            "The penalty pulls each gradient norm towards 1, not 0: "
            "(‖g‖ - 1)². A 1-Lipschitz linear critic, whose gradient norm is "
            "1 everywhere, pays nothing.",
        ),
        Mistake(
            "one norm for the whole batch",
            _penalty_batch_norm,
            "Take one gradient norm per sample (over all of its pixels), then "
            "average (‖g_i‖ - 1)² over the batch; a single norm over the "
            "whole batch's gradient grows with the batch size.",
        ),
        Mistake(
            "norm over the last dimension only",
            _penalty_last_dim,
            "For images, flatten each sample's gradient before its norm "
            "(g.flatten(1).norm(dim=1)): the norm over the last dimension "
            "alone gives one norm per row of pixels.",
        ),
        Mistake(
            "one-sided penalty",
            lambda c, r, f, u: (
                (_gradient_norms(c, u * r + (1 - u) * f)[0] - 1).clamp(min=0)
                ** 2
            ).mean(),
            "WGAN-GP's penalty is two-sided: norms below 1 are penalised too, "
            "(‖g‖ - 1)² without clamping.",
        ),
        Mistake(
            "the gradient at the real images",
            lambda c, r, f, u: ((_gradient_norms(c, r)[0] - 1) ** 2).mean(),
            "The gradient is taken at the interpolates x̂ = u·real + (1 - "
            "u)·fake, between the two distributions, not at the real images.",
        ),
        Mistake(
            "the gradient of the mean score",
            _penalty_mean_score,
            "The gradient of the mean score scales every sample's gradient "
            "by 1/B: take the gradient of the sum.",
        ),
    ],
    fallback="Try the linear critic f(x) = w · x by hand: every gradient is "
    "w, so the penalty is (‖w‖ − 1)². Make sure each row of your gradient "
    "is one sample's, and that x̂ requires grad before the critic sees it.",
)
