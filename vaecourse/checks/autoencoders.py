"""Checks for the exercises of the chapter "Autoencoders"."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg import subspace_angles

from vaecourse.chapters.autoencoders import code_bits
from vaecourse.checks import Exercise, Mistake

_gen = torch.Generator().manual_seed(0)
f64 = torch.float64


def _normal(*shape, scale=1.0):
    return scale * torch.randn(*shape, generator=_gen, dtype=f64)


def _uniform(*shape):
    return torch.rand(*shape, generator=_gen, dtype=f64)


# 1. The BCE per pixel from the decoder's logits -----------------------------


def _bce_logits(logits, x):
    loss = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return loss.flatten(1).mean(1)


def _bce_naive(logits, x):
    p = torch.sigmoid(logits)
    loss = -(x * torch.log(p) + (1 - x) * torch.log(1 - p))
    return loss.flatten(1).mean(1)


def _bce_clamped(logits, x):
    loss = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="none")
    return loss.flatten(1).mean(1)


bce_from_logits = Exercise(
    name="bce_from_logits",
    question="The binary cross-entropy of each image, in nats per pixel, "
    "computed stably from the decoder's logits.",
    reference=_bce_logits,
    cases=[
        (_normal(4, 784, scale=3.0), _uniform(4, 784)),
        (_normal(2, 1, 28, 28, scale=3.0), _uniform(2, 1, 28, 28)),
        (
            torch.zeros(1, 4, dtype=f64),
            torch.tensor([[0.0, 1.0, 0.3, 1.0]], dtype=f64),
        ),
        (
            torch.tensor([[1000.0, -1000.0], [40.0, -40.0]], dtype=f64),
            torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=f64),
        ),
        (
            torch.tensor([[-1000.0, 1000.0]], dtype=f64),
            torch.tensor([[1.0, 0.0]], dtype=f64),
        ),
    ],
    labels=[
        "4 images of 784 grey pixels, logits of scale 3",
        "2 images of shape (1, 28, 28)",
        "logits 0 (probability 1/2) for pixels [0, 1, 0.3, 1]",
        "confident and right: logits ±1000 and ±40 on binary pixels",
        "confident and wrong: logit -1000 on ink, +1000 on background",
    ],
    mistakes=[
        Mistake(
            "nats per image",
            lambda logits, x: _bce_logits(logits, x) * x[0].numel(),
            "The chapter reports the BCE per pixel: average over the pixels "
            "of each image (nats / 784), do not sum.",
        ),
        Mistake(
            "log of the sigmoid",
            _bce_naive,
            "Taking log(sigmoid(logit)) underflows: at a logit of ±1000 the "
            "sigmoid is exactly 0 or 1 in floating point, and 0 · log 0 gives "
            "nan. Work with the logits: F.binary_cross_entropy_with_logits, "
            "or softplus(logit) - x · logit.",
        ),
        Mistake(
            "softplus written as log1p(exp(l))",
            lambda logits, x: (
                (torch.log1p(torch.exp(logits)) - x * logits)
                .flatten(1)
                .mean(1)
            ),
            "exp(1000) overflows to inf: use F.softplus, which never forms "
            "exp of a large logit.",
        ),
        Mistake(
            "BCE of the sigmoid, clamped",
            _bce_clamped,
            "F.binary_cross_entropy on sigmoid(logits) clamps each log at "
            "-100, so a confidently wrong pixel (logit -1000 on ink) costs "
            "100 nats instead of 1000; use binary_cross_entropy_with_logits.",
        ),
        Mistake(
            "arguments swapped",
            lambda logits, x: _bce_logits(x, logits),
            "Did you swap the arguments? binary_cross_entropy_with_logits "
            "takes the logits first and the target images second.",
        ),
        Mistake(
            "one mean over the batch",
            lambda logits, x: _bce_logits(logits, x).mean(),
            "Return one value per image (shape (N,)): average over the pixels "
            "of each image, not over the whole batch.",
        ),
    ],
    fallback="Write the per-pixel BCE as a function of the logit alone "
    "(log sigmoid(l) = -softplus(-l)); average over all dimensions but the "
    "first.",
)


# 2. Principal angles between two subspaces ----------------------------------


def _angles(a, b):
    return torch.from_numpy(subspace_angles(a.numpy(), b.numpy()))


def _unit_columns(a):
    return a / a.norm(dim=0)


def _angles_not_orthonormal(a, b):
    cosines = torch.linalg.svdvals(_unit_columns(a).T @ _unit_columns(b))
    return torch.arccos(cosines.clamp(-1, 1)).flip(0)


def _angles_column_by_column(a, b):
    m = min(a.shape[1], b.shape[1])
    cosines = (_unit_columns(a)[:, :m] * _unit_columns(b)[:, :m]).sum(0)
    return torch.arccos(cosines.abs().clamp(max=1))


def _cosines(a, b):
    qa, qb = torch.linalg.qr(a)[0], torch.linalg.qr(b)[0]
    return torch.linalg.svdvals(qa.T @ qb).flip(0)


_a = _normal(8, 3)
_e = torch.eye(6, dtype=f64)

principal_angles = Exercise(
    name="principal_angles",
    question="The principal angles between the subspaces spanned by the "
    "columns of two matrices, in radians, largest first.",
    reference=_angles,
    cases=[
        (_a, _normal(8, 3)),
        (_a, _a @ _normal(3, 3)),
        (_e[:, :2], _e[:, 2:4]),
        (_normal(6, 2), _normal(6, 3)),
        (
            torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=f64),
            torch.tensor([[1.0, 1.0], [1.0, -1.0], [0.0, 1.0]], dtype=f64),
        ),
    ],
    labels=[
        "two random 3-dimensional subspaces of R^8",
        "b = a R for a random invertible R (the same subspace, another basis)",
        "span(e1, e2) against span(e3, e4) in R^6 (orthogonal subspaces)",
        "a plane and a 3-dimensional subspace of R^6",
        "the plane z = 0 against a plane through its diagonal x = y",
    ],
    mistakes=[
        Mistake(
            "in degrees",
            lambda a, b: torch.rad2deg(_angles(a, b)),
            "Return radians, as scipy.linalg.subspace_angles does (the "
            "chapter converts to degrees only to print them).",
        ),
        Mistake(
            "smallest first",
            lambda a, b: _angles(a, b).flip(0),
            "Order the angles largest first, as scipy.linalg.subspace_angles "
            "does: the singular values come largest first, so their arccos "
            "comes smallest first.",
        ),
        Mistake(
            "bases not orthonormalized",
            _angles_not_orthonormal,
            "The singular values of aᵀb are cosines only when both bases are "
            "orthonormal: orthonormalize the columns first (torch.linalg.qr), "
            "unit length is not enough.",
        ),
        Mistake(
            "column by column",
            _angles_column_by_column,
            "The angles are between the subspaces, not between matching "
            "columns: a subspace has many bases (b = a R spans the same "
            "subspace, so every angle is 0). Use the singular values of "
            "Q_aᵀ Q_b.",
        ),
        Mistake(
            "the cosines",
            _cosines,
            "The singular values of Q_aᵀ Q_b are the cosines of the angles: "
            "take their arccos.",
        ),
    ],
    fallback="Try the plane z = 0 against the plane spanned by (1, 1, 0) and "
    "(1, -1, 1): they share the line x = y, so the angles are arccos(2/√6) ≈ "
    "0.615 and 0. Check that your bases are orthonormal, that a cosine a hair "
    "above 1 cannot make arccos nan, and the order of the angles.",
    atol=1e-6,  # an arccos near 1 is accurate to about 1e-8 only
)


# 3. The rate of a quantized code in bits per image -------------------------


def _rate(train, test):
    return code_bits(train.numpy(), test.numpy())


def _rate_with(train, test, *, half=0.5, log=np.log2, pooled=False):
    """code_bits with another smoothing count, logarithm, or one table for
    all the coordinates."""
    train, test = train.numpy(), test.numpy()
    if pooled:
        low = min(train.min(), test.min())
        high = max(train.max(), test.max())
        counts = np.bincount((train - low).ravel(), minlength=high - low + 1)
        p = (counts + half) / (counts + half).sum()
        return float(-log(p[test - low]).sum(1).mean())
    total = 0.0
    for j in range(train.shape[1]):
        low = min(train[:, j].min(), test[:, j].min())
        high = max(train[:, j].max(), test[:, j].max())
        counts = (
            np.bincount(train[:, j] - low, minlength=high - low + 1) + half
        )
        p = counts / counts.sum()
        with np.errstate(divide="ignore"):
            total += -log(p[test[:, j] - low]).mean()
    return float(total)


def _symbols(n, k, scale):
    return torch.round(_normal(n, k, scale=scale)).long()


_train = _symbols(300, 3, 2.0)
_test = _symbols(60, 3, 2.0)
_unseen = _symbols(40, 3, 2.0)
_unseen[0, 1] = int(_train[:, 1].max()) + 3  # a value never seen in training
_flat = torch.cat([_symbols(100, 1, 3.0), torch.zeros(100, 1).long()], dim=1)

rate_bits = Exercise(
    name="rate_bits",
    question="The rate of quantized codes in bits per image, with probability "
    "tables counted on the training codes (half a count added to each value).",
    reference=_rate,
    cases=[
        (_train, _test),
        (_train, _unseen),
        (_symbols(200, 1, 1.5), _symbols(30, 1, 1.5)),
        (_flat, _flat[:20]),
        (_train[:50], _train[:50]),
    ],
    labels=[
        "300 training codes and 60 codes to compress, k = 3",
        "a code to compress with a value never seen in training",
        "a code of a single number (k = 1)",
        "k = 2, the second coordinate always 0",
        "the training codes compressed themselves",
    ],
    mistakes=[
        Mistake(
            "in nats",
            lambda train, test: _rate_with(train, test, log=np.log),
            "Bits need the base-2 logarithm (np.log2, torch.log2): with the "
            "natural logarithm you get nats.",
        ),
        Mistake(
            "tables counted on the codes compressed",
            lambda train, test: _rate(test, test),
            "Count the tables on the training codes: a coder fixed before it "
            "sees the codes it compresses (exercise 3 shows what peeking "
            "gains).",
        ),
        Mistake(
            "no half count",
            lambda train, test: _rate_with(train, test, half=0.0),
            "Add half a count to every value between the smallest and the "
            "largest seen in either set: without it a value never seen in "
            "training has probability 0 and costs infinitely many bits.",
        ),
        Mistake(
            "a count of one added",
            lambda train, test: _rate_with(train, test, half=1.0),
            "The book adds half a count to every value in the range, not a "
            "whole one.",
        ),
        Mistake(
            "one table for all coordinates",
            lambda train, test: _rate_with(train, test, pooled=True),
            "Each coordinate j has its own table p_j, counted on column j of "
            "the training codes alone: the coordinates of a code can be "
            "distributed very differently (one of them may never vary).",
        ),
        Mistake(
            "a mean over coordinates",
            lambda train, test: _rate(train, test) / train.shape[1],
            "Sum the bits over the k coordinates of a code (they are all "
            "sent), then average over the images.",
        ),
    ],
    fallback="Count one coordinate's table by hand on a tiny example and "
    "compare: its range covers both sets, its counts come from the training "
    "codes only, every value gets half a count, and the bits (base 2) are "
    "summed over the coordinates before the mean over the codes.",
)
