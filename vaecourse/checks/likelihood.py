"""Checks for the exercises of the chapter "How far a VAE goes on a CPU"."""

from __future__ import annotations

import math

import torch

from vaecourse.checks import Exercise, Mistake
from vaecourse.prob import iw_bound

_gen = torch.Generator().manual_seed(0)
f64 = torch.float64


def _normal(*shape):
    return torch.randn(*shape, generator=_gen, dtype=f64)


def _uniform(*shape):
    return torch.rand(*shape, generator=_gen, dtype=f64)


# 4. An unbiased estimate of the importance-weighted bound L_k ---------------


def _groups(log_w, k):
    """The n log-weights per image cut into n/k consecutive groups of k:
    shape (n/k, k, ...)."""
    n = log_w.shape[0]
    if n % k:
        raise ValueError(
            f"n = {n} samples do not split into groups of k = {k}"
        )
    return log_w.reshape(n // k, k, *log_w.shape[1:])


def _iwae_bound(log_w, k):
    return iw_bound(_groups(log_w, k), dim=1).mean(0)


def _iwae_all_samples(log_w, k):  # L_n; also the groups' mean weights averaged
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def _iwae_all_samples_log_k(log_w, k):
    return torch.logsumexp(log_w, 0) - math.log(k)


def _iwae_no_log_k(log_w, k):
    return torch.logsumexp(_groups(log_w, k), 1).mean(0)


def _iwae_log_n(log_w, k):
    return torch.logsumexp(_groups(log_w, k), 1).mean(0) - math.log(
        log_w.shape[0]
    )


def _iwae_unstable(log_w, k):
    return torch.log(torch.exp(_groups(log_w, k)).mean(1)).mean(0)


def _iwae_interleaved(log_w, k):  # groups {i, i + n/k, i + 2n/k, ...}
    n = log_w.shape[0]
    interleaved = log_w.reshape(k, n // k, *log_w.shape[1:])
    return iw_bound(interleaved, dim=0).mean(0)


def _iwae_summed(log_w, k):
    return iw_bound(_groups(log_w, k), dim=1).sum(0)


def _iwae_dimensions_swapped(log_w, k):
    # logsumexp over the n/k groups, mean over the k places within a group
    groups = _groups(log_w, k)
    return (torch.logsumexp(groups, 0) - math.log(k)).mean(0)


_mnist = -90 + 3 * _normal(12, 4)
iwae_bound = Exercise(
    name="iwae_bound",
    question="An unbiased estimate of the importance-weighted bound L_k per "
    "image from n = m k log-weights: the mean over m consecutive groups of k "
    "of log (1/k) Σ w.",
    reference=_iwae_bound,
    cases=[
        (_mnist, 3),
        (2 * _normal(10, 2), 5),
        (_normal(6, 3), 1),
        (_normal(8, 2), 8),
        (_mnist, 2),
        (-800 + 4 * _normal(6, 3), 2),
        (750 + 4 * _normal(8, 2), 4),
        (torch.tensor([[0.0], [-30.0], [-30.0], [-30.0]], dtype=f64), 2),
    ],
    labels=[
        "n = 12 log-weights around -90 nats (MNIST) for each of 4 images, "
        "k = 3",
        "n = 10 log-weights for each of 2 images, k = 5",
        "n = 6 log-weights for each of 3 images, k = 1 (the ELBO)",
        "n = 8 log-weights for each of 2 images, k = 8 (a single group)",
        "the 12 log-weights of the first case, k = 2",
        "n = 6 log-weights around -800 nats for each of 3 images, k = 2",
        "n = 8 log-weights around +750 nats for each of 2 images, k = 4",
        "one image, log w = [0, -30, -30, -30], k = 2 (one weight dominates "
        "the first group)",
    ],
    mistakes=[
        Mistake(
            "log of the mean of all n weights (L_n)",
            _iwae_all_samples,
            "That is the log of the mean of all n weights (averaging the "
            "groups' mean weights before the log gives it too): an estimate "
            "of L_n, the tighter bound of n samples, not of L_k. Take the log "
            "in each group, then average the logs.",
        ),
        Mistake(
            "all n samples in one logsumexp, minus log k",
            _iwae_all_samples_log_k,
            "Your logsumexp runs over all n samples at once: L_k needs one "
            "logsumexp per group of k samples, averaged over the n/k groups.",
        ),
        Mistake(
            "log k not subtracted",
            _iwae_no_log_k,
            "Each group's estimate is the log of the mean of its k weights, "
            "not of their sum: yours is log k too large.",
        ),
        Mistake(
            "divided by n instead of k",
            _iwae_log_n,
            "A group averages its own k weights: divide by k (subtract log k) "
            "in each group, not by the n samples of the image.",
        ),
        Mistake(
            "the mean of the log-weights (the ELBO)",
            lambda log_w, k: log_w.mean(0),
            "The mean of the log-weights estimates the ELBO, L_1, whatever k "
            "is: for L_k, average the weights inside each group before the "
            "log.",
        ),
        Mistake(
            "exp of the log-weights overflows",
            _iwae_unstable,
            "exp(log w) underflows to 0 for log-weights of hundreds of "
            "negative nats (log 0 = -inf) and overflows above 709: average "
            "the weights in logs, with torch.logsumexp or "
            "vaecourse.prob.iw_bound.",
        ),
        Mistake(
            "groups interleaved",
            _iwae_interleaved,
            "Your groups take every (n/k)-th sample (i, i + n/k, ...): that "
            "too estimates L_k without bias, but the question asks for "
            "consecutive groups, samples 0 to k - 1, then k to 2k - 1, and "
            "so on.",
        ),
        Mistake(
            "summed over the groups",
            _iwae_summed,
            "Average the groups' estimates, do not sum them: each group is an "
            "estimate of L_k on its own, so the result must not grow with "
            "n/k.",
        ),
        Mistake(
            "logsumexp over the groups, mean within them",
            _iwae_dimensions_swapped,
            "Your logsumexp runs across the groups and your mean along the "
            "samples of a group: the two reductions act on the wrong "
            "dimensions of your (n/k, k, batch) view.",
        ),
        Mistake(
            "averaged over the batch",
            lambda log_w, k: _iwae_bound(log_w, k).mean(),
            "Return one estimate per image, shape (batch,): do not average "
            "over the images.",
        ),
    ],
    fallback="Try k = 1 first, where the answer is the mean of the "
    "log-weights, and k = n, where it is log (1/n) Σ w over all samples; "
    "then check which samples your groups hold, and over which dimension "
    "each reduction runs.",
)


# 5. Resampling: a draw from the IWAE's implicit posterior -------------------


def _first_above(cdf, u):
    """Per image, the first position where the running sum exceeds u (the
    number of positions where it does not), at most k - 1: the running sum
    may end a little below 1."""
    return (cdf <= u).sum(0).clamp(max=cdf.shape[0] - 1)


def _resample_index(log_w, u):
    return _first_above(torch.softmax(log_w, 0).cumsum(0), u)


def _resample_unnormalized(log_w, u):
    return _first_above(torch.exp(log_w).cumsum(0), u)


def _resample_over_k(log_w, u):
    return _first_above(torch.exp(log_w).cumsum(0) / log_w.shape[0], u)


def _resample_unstable(log_w, u):
    w = torch.exp(log_w)
    return _first_above((w / w.sum(0)).cumsum(0), u)


def _resample_last_below(log_w, u):  # the largest i with cdf_i <= u
    return (torch.softmax(log_w, 0).cumsum(0) <= u).sum(0) - 1


# seven equal weights: the running sum of 1/7 ends at 0.9999999999999998,
# below u = 1 - 2**-53 = 0.9999999999999999, the largest float64 below 1
_k7 = torch.full((7, 2), -90.0, dtype=f64)
_almost_1 = 1 - 2.0**-53
resample_index = Exercise(
    name="resample_index",
    question="Sampling importance resampling by the inverse CDF: per image, "
    "the first of k samples at which the running sum of the normalized "
    "weights w̃ exceeds a uniform u.",
    reference=_resample_index,
    cases=[
        (-90 + 2 * _normal(5, 4), _uniform(4)),
        (_normal(4, 3), _uniform(3)),
        (_normal(1, 3), _uniform(3)),
        (
            torch.tensor(
                [[-30.0, -25.0], [0.0, -30.0], [-30.0, 0.0], [-30.0, -28.0]],
                dtype=f64,
            ),
            torch.tensor([0.97, 0.02], dtype=f64),
        ),
        (-800 + 3 * _normal(4, 3), _uniform(3)),
        (750 + 3 * _normal(3, 2), _uniform(2)),
        (
            torch.tensor(
                [[-40.0, 1.5], [0.0, -1.0], [1.0, 0.0], [2.0, 1.0]], dtype=f64
            ),
            torch.tensor([1e-12, 1e-12], dtype=f64),
        ),
        (_k7, torch.tensor([_almost_1, 0.5], dtype=f64)),
    ],
    labels=[
        "k = 5 log-weights around -90 nats (MNIST) for each of 4 images",
        "k = 4 log-weights near 0 for each of 3 images",
        "k = 1 log-weight for each of 3 images",
        "two images whose weights one sample dominates (log w = [-30, 0, "
        "-30, -30] and [-25, -30, 0, -28]), u = 0.97 and 0.02",
        "k = 4 log-weights around -800 nats for each of 3 images",
        "k = 3 log-weights around +750 nats for each of 2 images",
        "u = 1e-12 for two images, log w = [-40, 0, 1, 2] (a first weight "
        "below u) and [1.5, -1, 0, 1]",
        "k = 7 equal log-weights for each of 2 images, u = 1 - 2^-53 (the "
        "largest float64 below 1) and 0.5",
    ],
    mistakes=[
        Mistake(
            "the argmax of the weights",
            lambda log_w, u: log_w.argmax(0),
            "You return the sample with the largest weight whatever u is: "
            "that is a choice, not a draw. Sample i must be chosen for a "
            "share w̃_i of the values of u in [0, 1).",
        ),
        Mistake(
            "unnormalized weights exp(log w)",
            _resample_unnormalized,
            "Your running sum adds the weights w_i themselves: normalize them "
            "over the k samples first, so that the running sum ends at 1 and "
            "every u in [0, 1) lands on a sample.",
        ),
        Mistake(
            "running sum of the log-weights",
            lambda log_w, u: _first_above(log_w.cumsum(0), u),
            "Your running sum adds the log-weights: it must add the "
            "normalized weights w̃_i, which are positive and sum to 1.",
        ),
        Mistake(
            "weights divided by k",
            _resample_over_k,
            "Your running sum adds w_i / k, whose sum is the estimate of "
            "p(x), not 1: normalize each weight by the sum of the k weights.",
        ),
        Mistake(
            "exp of the log-weights overflows",
            _resample_unstable,
            "exp(log w) underflows to 0 for log-weights of hundreds of "
            "negative nats and overflows above 709, so w / Σ w gives 0 / 0 "
            "or inf / inf = nan: normalize in logs (subtract the largest "
            "log-weight, or use torch.softmax).",
        ),
        Mistake(
            "running sum over the batch",
            lambda log_w, u: _first_above(
                torch.softmax(log_w, 0).cumsum(1), u
            ),
            "Your running sum runs along the images, the second dimension: "
            "it must run along the k samples of each image, the first.",
        ),
        Mistake(
            "normalized over the batch",
            lambda log_w, u: _first_above(
                torch.softmax(log_w, 1).cumsum(0), u
            ),
            "The weights are normalized over the k samples of each image, "
            "the first dimension; the second one holds different images.",
        ),
        Mistake(
            "the last position at or below u",
            _resample_last_below,
            "You return the last position where the running sum is at most "
            "u (-1 where the first weight alone exceeds u): one before the "
            "first position where it exceeds u.",
        ),
        Mistake(
            "indices counted from 1",
            lambda log_w, u: _resample_index(log_w, u) + 1,
            "Your indices count from 1: tensors count from 0, so the first "
            "sample is index 0 and the last k - 1.",
        ),
        Mistake(
            "uniform choice floor(u k)",
            lambda log_w, u: (u * log_w.shape[0]).floor().long(),
            "floor(u k) chooses each sample with probability 1/k whatever "
            "its weight: resampling chooses sample i with probability w̃_i.",
        ),
        Mistake(
            "index not clamped to k - 1",
            lambda log_w, u: (torch.softmax(log_w, 0).cumsum(0) <= u).sum(0),
            "Your index reached k, one past the last sample: in floating "
            "point the running sum can end just below 1 (0.9999999999999998 "
            "for seven weights of 1/7), below a u close to 1.",
        ),
    ],
    fallback="Try k = 1, where the answer is always 0, and k equal "
    "log-weights, where it is floor(u k); normalize over the samples (the "
    "first dimension) without forming exp of a log-weight of hundreds of "
    "nats, and count positions from 0.",
)


# 6. The weights of the doubly-reparameterized gradient (DReG) ---------------


def _dreg(log_w):
    return torch.softmax(log_w, 0) ** 2


def _dreg_unstable(log_w):
    w = torch.exp(log_w)
    return (w / w.sum(0)) ** 2


dreg_weights = Exercise(
    name="dreg_weights",
    question="The weights w̃_i² that the doubly-reparameterized gradient "
    "(DReG) puts on each sample's path derivative, from the log-weights.",
    reference=_dreg,
    cases=[
        (2 * _normal(5, 3),),
        (_normal(1, 4),),
        (torch.full((4, 2), -90.0, dtype=f64),),
        (_normal(3, 3),),
        (750 + 2 * _normal(3, 2),),
        (torch.tensor([[-800.0], [-801.0], [-1800.0], [-805.0]], dtype=f64),),
    ],
    labels=[
        "k = 5 log-weights for each of 3 images",
        "k = 1 log-weight for each of 4 images",
        "k = 4 equal log-weights for each of 2 images",
        "k = 3 log-weights for each of 3 images",
        "k = 3 log-weights around +750 nats for each of 2 images",
        "one image, log w = [-800, -801, -1800, -805]",
    ],
    mistakes=[
        Mistake(
            "not squared (the IWAE's weights)",
            lambda log_w: torch.softmax(log_w, 0),
            "Those are the normalized weights w̃_i of the IWAE gradient; "
            "DReG weighs each sample's path derivative by w̃_i², the square.",
        ),
        Mistake(
            "normalized after squaring",
            lambda log_w: torch.softmax(2 * log_w, 0),
            "You normalized the squared weights, w_i² / Σ_j w_j², which sum "
            "to 1: DReG's weights are the squares of the normalized weights, "
            "(w_i / Σ_j w_j)², which do not.",
        ),
        Mistake(
            "normalized over the batch",
            lambda log_w: torch.softmax(log_w, -1) ** 2,
            "The weights are normalized over the k samples of each image, "
            "the first dimension; the second one holds different images.",
        ),
        Mistake(
            "exp of the log-weights overflows",
            _dreg_unstable,
            "exp(log w) overflows above 709 and underflows to 0 below about "
            "-745, giving nan: normalize in logs (subtract the largest "
            "log-weight, or use torch.softmax).",
        ),
        Mistake(
            "uniform weights 1/k",
            lambda log_w: torch.full_like(log_w, 1 / log_w.shape[0]),
            "The weights depend on the log-weights: a sample with a large "
            "weight w_i gets a large share, not 1/k.",
        ),
        Mistake(
            "w̃ (1 - w̃)",
            lambda log_w: (
                torch.softmax(log_w, 0) * (1 - torch.softmax(log_w, 0))
            ),
            "w̃_i (1 - w̃_i) is not DReG's weight: for k = 1 it is 0 and would "
            "drop the gradient; DReG's weight is w̃_i².",
        ),
        Mistake(
            "returned as logarithms",
            lambda log_w: 2 * torch.log_softmax(log_w, 0),
            "Return the weights themselves, not their logarithms.",
        ),
    ],
    fallback="Try k = 1, where every weight is 1, and equal log-weights, "
    "where each is 1/k²; normalize over the samples (the first dimension) "
    "without forming exp of a log-weight of hundreds of nats.",
)
