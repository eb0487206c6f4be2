"""Checks for the exercises of the chapter "The data"."""

from __future__ import annotations

import math

import torch

from vaecourse.checks import Exercise, Mistake

_gen = torch.Generator().manual_seed(0)
f64 = torch.float64


def _uniform(*shape, low=0.0, high=1.0):
    return low + (high - low) * torch.rand(*shape, generator=_gen, dtype=f64)


# 1. Masking noise from given random scores -----------------------------------


def _destroy(images, scores, k, *, largest=True):
    """Set the k pixels of each image with the largest (or smallest) scores
    to 0."""
    flat = images.reshape(len(images), -1)
    chosen = scores.reshape(len(images), -1).topk(k, dim=1, largest=largest)
    destroyed = torch.zeros_like(flat, dtype=torch.bool)
    destroyed.scatter_(1, chosen.indices, True)
    return flat.masked_fill(destroyed, 0.0).reshape(images.shape)


def _masking(images, nu, scores):
    d = images[0].numel()
    return _destroy(images, scores, round(nu * d))


def _masking_whole_batch(images, nu, scores):
    # one top-k over all the pixels of the batch, not per image
    n, d = len(images), images[0].numel()
    flat = images.reshape(1, -1)
    return _destroy(flat, scores.reshape(1, -1), round(nu * d) * n).reshape(
        images.shape
    )


masking_noise_from_scores = Exercise(
    name="masking_noise_from_scores",
    question="Masking noise: set the round(ν d) pixels of each image with the "
    "largest given random scores to 0.",
    reference=_masking,
    cases=[
        (_uniform(2, 1, 28, 28, low=0.1), 0.7, _uniform(2, 1, 28, 28)),
        (_uniform(3, 10, low=0.1), 0.37, _uniform(3, 10)),
        (_uniform(3, 10, low=0.1), 0.33, _uniform(3, 10)),
        (_uniform(4, 6, low=0.1), 0.25, _uniform(4, 6)),
        (_uniform(2, 5, low=0.1), 0.0, _uniform(2, 5)),
        (_uniform(2, 5, low=0.1), 1.0, _uniform(2, 5)),
    ],
    labels=[
        "two images of shape (1, 28, 28), ν = 0.7 (ν d = 548.8)",
        "3 images of 10 pixels, ν = 0.37 (ν d = 3.7)",
        "3 images of 10 pixels, ν = 0.33 (ν d = 3.3)",
        "4 images of 6 pixels, ν = 0.25 (ν d = 1.5)",
        "ν = 0 (nothing destroyed)",
        "ν = 1 (every pixel destroyed)",
    ],
    mistakes=[
        Mistake(
            "rounded down",
            lambda images, nu, scores: _destroy(
                images, scores, int(nu * images[0].numel())
            ),
            "Did you round ν d down (int() or //)? The book destroys "
            "round(ν d) pixels per image: 548.8 becomes 549, not 548.",
        ),
        Mistake(
            "rounded up",
            lambda images, nu, scores: _destroy(
                images, scores, math.ceil(nu * images[0].numel())
            ),
            "Did you round ν d up (math.ceil)? The book destroys round(ν d) "
            "pixels: 3.3 becomes 3.",
        ),
        Mistake(
            "independent coin flips",
            lambda images, nu, scores: images * (scores >= nu),
            "Did you destroy each pixel whose score is below ν? That is an "
            "independent coin flip per pixel, so the number destroyed varies "
            "from image to image; masking noise destroys exactly round(ν d) "
            "per image: the pixels with the largest scores (topk).",
        ),
        Mistake(
            "one top-k over the batch",
            _masking_whole_batch,
            "Choose the pixels image by image: flatten to (N, d) and take the "
            "top k along dim=1, not over all the pixels of the batch at once.",
        ),
        Mistake(
            "the fraction kept is ν",
            lambda images, nu, scores: _masking(images, 1 - nu, scores),
            "ν is the fraction of pixels destroyed, not the fraction kept: "
            "with ν = 0 the image must come back unchanged.",
        ),
        Mistake(
            "the smallest scores",
            lambda images, nu, scores: _destroy(
                images, scores, round(nu * images[0].numel()), largest=False
            ),
            "Destroy the pixels with the largest scores (topk's default), not "
            "the smallest: the choice is as random either way, but the "
            "exercise fixes it so that your mask is the reference's.",
        ),
    ],
    fallback="Try it on one small image you can print: it must lose exactly "
    "round(ν d) pixels, those with the largest scores in its own row of the "
    "flattened (N, d) scores, and come back in the images' shape.",
)


# 2. The entropy of dynamic binarization, per image ---------------------------


def _entropy(x):
    h = -(torch.xlogy(x, x) + torch.xlogy(1 - x, 1 - x))
    return h.flatten(1).sum(1)


def _entropy_naive(x):
    h = -(x * torch.log(x) + (1 - x) * torch.log(1 - x))
    return h.flatten(1).sum(1)


def _entropy_clamped(x):
    x = x.clamp(1e-6, 1 - 1e-6)  # keeps the logs finite, but not exact
    h = -(x * torch.log(x) + (1 - x) * torch.log(1 - x))
    return h.flatten(1).sum(1)


_grey = _uniform(3, 1, 28, 28)
_mixed = _uniform(2, 6)
_mixed[0, :3] = 0.0
_mixed[1, 3:] = 1.0

binarization_entropy = Exercise(
    name="binarization_entropy",
    question="The entropy of the dynamic binarization of each image, in nats "
    "(the floor of the expected Bernoulli negative log-likelihood).",
    reference=_entropy,
    cases=[
        (_grey,),
        (_uniform(4, 9, low=0.01, high=0.99),),
        (torch.full((1, 8), 0.5, dtype=f64),),
        (
            torch.tensor(
                [[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=f64
            ),
        ),
        (_mixed,),
    ],
    labels=[
        "3 grey images of shape (1, 28, 28)",
        "4 images of 9 pixels, grey levels between 0.01 and 0.99",
        "one image of 8 pixels, all 0.5",
        "black-and-white images (every pixel 0 or 1)",
        "2 images of 6 pixels, some exactly 0 or 1",
    ],
    mistakes=[
        Mistake(
            "0 log 0 gives nan",
            _entropy_naive,
            "A pixel that is exactly 0 or 1 gives 0 · log 0 = nan in floating "
            "point, and most MNIST pixels are exactly 0; the convention is "
            "0 log 0 = 0: use torch.xlogy(x, x).",
        ),
        Mistake(
            "clamped away from 0 and 1",
            _entropy_clamped,
            "Clamping or adding ε leaves a small error at pixels that are "
            "exactly 0 or 1; use torch.xlogy.",
        ),
        Mistake(
            "in bits",
            lambda x: _entropy(x) / math.log(2),
            "The book measures in nats: use the natural logarithm, not "
            "log2 (an image of pixels all at 0.5 has log 2 ≈ 0.693 nats per "
            "pixel).",
        ),
        Mistake(
            "per pixel",
            lambda x: _entropy(x).div(x[0].numel()),
            "Sum over the pixels of each image instead of averaging: the "
            "entropy of independent pixels is the sum of theirs, in nats per "
            "image.",
        ),
        Mistake(
            "only the ink term",
            lambda x: -torch.xlogy(x, x).flatten(1).sum(1),
            "A Bernoulli pixel has two outcomes: the entropy is "
            "-x log x - (1 - x) log(1 - x); you kept only the first term.",
        ),
        Mistake(
            "summed over the batch",
            lambda x: _entropy(x).sum(),
            "Return one value per image (shape (N,)): sum over every "
            "dimension but the first.",
        ),
    ],
    fallback="Per pixel, H(x) = -x log x - (1 - x) log(1 - x) exactly, with "
    "0 log 0 = 0 (torch.xlogy, no clamping); sum it over all dimensions but "
    "the first.",
)


# 3. A generator's class counts against MNIST's class shares ----------------

# MNIST's training set, digits 0-9 (the chapter's class-balance table)
_train_counts = torch.tensor(
    [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949], dtype=f64
)
_shares = _train_counts / _train_counts.sum()


def _chi_square(counts, shares):
    expected = counts.sum(-1, keepdim=True) * shares
    return ((counts - expected) ** 2 / expected).sum(-1)


def _draws(n, probabilities):
    """The class counts of n draws with the given probabilities."""
    picks = torch.multinomial(
        probabilities, n, replacement=True, generator=_gen
    )
    return torch.bincount(picks, minlength=len(probabilities)).to(f64)


_skewed = _shares.clone()
_skewed[5] = 0.0  # a generator that never draws a 5
_skewed = _skewed / _skewed.sum()
_matching = torch.round(10_000 * _shares)

class_chi_square = Exercise(
    name="class_chi_square",
    question="Pearson's chi-square statistic of a generator's class counts "
    "against the training set's class shares.",
    reference=_chi_square,
    cases=[
        (_draws(1000, _shares), _shares),
        (torch.stack([_draws(500, _shares), _draws(2000, _skewed)]), _shares),
        (_draws(3000, _skewed), _shares),
        (_matching, _shares),
        (_draws(1000, _shares), torch.full((10,), 0.1, dtype=f64)),
    ],
    labels=[
        "1,000 digits drawn with MNIST's class shares",
        "a batch of two generators, 500 and 2,000 digits (shape (2, 10))",
        "3,000 digits from a generator that never draws a 5",
        "10,000 digits in exactly MNIST's proportions (rounded)",
        "1,000 digits against a flat reference of 10% per class",
    ],
    mistakes=[
        Mistake(
            "a flat 10% reference",
            lambda counts, shares: _chi_square(
                counts, torch.full_like(shares, 1 / len(shares))
            ),
            "Use the shares you are given, not a flat 1/10: MNIST's classes "
            "are not exactly balanced, and the expected count of class c is "
            "n · shares[c].",
        ),
        Mistake(
            "divided by the observed counts",
            lambda counts, shares: (
                (counts - counts.sum(-1, keepdim=True) * shares) ** 2 / counts
            ).sum(-1),
            "Divide each squared difference by the expected count n · "
            "shares[c], not by the observed one (which is 0 for a class the "
            "generator never draws).",
        ),
        Mistake(
            "shares for expected counts",
            lambda counts, shares: ((counts - shares) ** 2 / shares).sum(-1),
            "The expected count of class c is n · shares[c], with n the "
            "number of digits (the sum of the counts): a share is not a "
            "count.",
        ),
        Mistake(
            "computed on shares",
            lambda counts, shares: (
                _chi_square(counts, shares) / counts.sum(-1)
            ),
            "Compare counts with expected counts, not observed shares with "
            "shares: the statistic grows with the number of digits n, which "
            "is what makes a small deviation detectable in a large sample.",
        ),
        Mistake(
            "summed over the batch",
            lambda counts, shares: _chi_square(counts, shares).sum(),
            "Return one statistic per row of counts: sum over the last "
            "dimension (the classes) only.",
        ),
    ],
    fallback="Compare with the formula on one row you can work out by hand: "
    "the expected count n s_c uses that row's own total n (keepdim=True keeps "
    "it broadcastable), each squared difference is divided by its expected "
    "count, and the sum runs over the classes only.",
)
