"""Checks for the exercises of the chapter "Comparing the models"."""

from __future__ import annotations

import math

import torch

from vaecourse import metrics
from vaecourse.checks import Exercise, Mistake
from vaecourse.uncertainty import ratio

_gen = torch.Generator().manual_seed(0)
f64 = torch.float64


def _normal(*shape, scale=1.0):
    return scale * torch.randn(*shape, generator=_gen, dtype=f64)


def _uniform(*shape, low=0.0, high=1.0):
    return low + (high - low) * torch.rand(*shape, generator=_gen, dtype=f64)


def _correlated(n, d, shift=0.0, scale=1.0):
    """n feature vectors of d numbers with correlated coordinates."""
    mixing = _normal(d, d, scale=scale / math.sqrt(d)) + torch.eye(d)
    return _normal(n, d) @ mixing + shift


# 1. The Fréchet distance between two sets of features -----------------------


def _psd_sqrt(matrix):
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def _statistics(features, correction=1):
    return features.mean(0), torch.cov(features.T, correction=correction)


def _distance(mu1, cov1, mu2, cov2):
    # tr (cov1 cov2)^{1/2} = tr (S cov2 S)^{1/2} with S = cov1^{1/2}: the
    # eigenvalues of a symmetric matrix, which are real and >= 0
    root = _psd_sqrt(cov1)
    trace_root = (
        torch.linalg.eigvalsh(root @ cov2 @ root).clamp(min=0).sqrt().sum()
    )
    return (
        ((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * trace_root
    )


def _frechet(a, b):
    # the book's instruments (sqrtm of the product; the mistakes below use
    # _distance, which agrees with it to about 1e-8)
    return metrics.frechet_distance(
        *metrics.feature_statistics(a), *metrics.feature_statistics(b)
    )


def _frechet_rows_as_variables(a, b):
    # torch.cov(a): each row taken as a variable, each column an observation
    return _distance(a.mean(0), torch.cov(a), b.mean(0), torch.cov(b))


def _frechet_diagonal(a, b):
    (m1, c1), (m2, c2) = _statistics(a), _statistics(b)
    s1, s2 = c1.diagonal().sqrt(), c2.diagonal().sqrt()
    return ((m1 - m2) ** 2).sum() + ((s1 - s2) ** 2).sum()


def _frechet_product_of_roots(a, b):
    (m1, c1), (m2, c2) = _statistics(a), _statistics(b)
    cross = (_psd_sqrt(c1) @ _psd_sqrt(c2)).trace()
    return ((m1 - m2) ** 2).sum() + c1.trace() + c2.trace() - 2 * cross


def _frechet_no_two(a, b):
    (m1, c1), (m2, c2) = _statistics(a), _statistics(b)
    root = _psd_sqrt(c1)
    trace_root = (
        torch.linalg.eigvalsh(root @ c2 @ root).clamp(min=0).sqrt().sum()
    )
    return ((m1 - m2) ** 2).sum() + c1.trace() + c2.trace() - trace_root


_SAME = _correlated(30, 4)

frechet_from_features = Exercise(
    name="frechet_from_features",
    question="The Fréchet distance between Gaussians fitted to two sets of "
    "feature vectors (mean, and covariance dividing by n - 1).",
    reference=_frechet,
    cases=[
        (_correlated(40, 3), _correlated(40, 3, shift=0.5, scale=2.0)),
        (_correlated(12, 5), _correlated(12, 5, shift=-0.3, scale=1.5)),
        (_SAME, _SAME.clone()),
        (_correlated(4, 6), _correlated(4, 6, shift=1.0)),
        (
            torch.cat([_normal(20, 2), torch.zeros(20, 1)], 1),
            torch.cat([_normal(20, 2, scale=2.0), torch.zeros(20, 1)], 1),
        ),
    ],
    labels=[
        "two sets of 40 vectors of 3 correlated features",
        "two sets of 12 vectors of 5 correlated features",
        "the same 30 vectors twice",
        "two sets of 4 vectors of 6 features (fewer vectors than features: "
        "singular covariances)",
        "two sets of 20 vectors whose third feature is always 0 (a unit "
        "that never fires)",
    ],
    mistakes=[
        Mistake(
            "covariance dividing by n",
            lambda a, b: _distance(
                *_statistics(a, correction=0), *_statistics(b, correction=0)
            ),
            "Divide the covariance by n - 1, as metrics.feature_statistics "
            "does (torch.cov and np.cov do by default; correction=0 or "
            "ddof=0 divides by n).",
        ),
        Mistake(
            "rows taken as the variables",
            _frechet_rows_as_variables,
            "torch.cov and np.cov take each ROW as a variable: pass the "
            "features transposed (torch.cov(a.T)) or use np.cov(a, "
            "rowvar=False), so that the covariance is d × d, not n × n.",
        ),
        Mistake(
            "the diagonal formula",
            _frechet_diagonal,
            "‖mu1 - mu2‖² + Σ (sigma1 - sigma2)² holds only for diagonal "
            "covariances (the chapter's check); correlated features need the "
            "matrix square root in tr(Σ1 + Σ2 - 2 (Σ1 Σ2)^{1/2}).",
        ),
        Mistake(
            "the product of two roots",
            _frechet_product_of_roots,
            "(Σ1 Σ2)^{1/2} is not Σ1^{1/2} Σ2^{1/2} unless the two matrices "
            "commute: take the square root of the product (scipy.linalg.sqrtm"
            "(Σ1 @ Σ2)), or the eigenvalues of Σ1^{1/2} Σ2 Σ1^{1/2}.",
        ),
        Mistake(
            "the factor 2 left out",
            _frechet_no_two,
            "The cross term is -2 tr (Σ1 Σ2)^{1/2}: with it, two identical "
            "sets have distance 0.",
        ),
    ],
    fallback="Check the Gaussians you fit first: each mean has d numbers, "
    "each covariance is d × d and divides by n − 1 (compare with "
    "metrics.feature_statistics); then check that two copies of one set are "
    "at distance 0.",
)


# 2. An unbiased kernel distance ----------------------------------------------


def _kernel(x, y):
    return (x @ y.T / x.shape[1] + 1) ** 3


def _off_diagonal_mean(k):
    n = k.shape[0]
    return (k.sum() - k.diagonal().sum()) / (n * (n - 1))


def _kernel_distance(a, b):
    # within-set averages leave out i = j: k(a_i, a_i) is no sample of
    # E k(a, a') for two independent a, a'
    return (
        _off_diagonal_mean(_kernel(a, a))
        + _off_diagonal_mean(_kernel(b, b))
        - 2 * _kernel(a, b).mean()
    )


def _kernel_distance_biased(a, b):
    return (
        _kernel(a, a).mean() + _kernel(b, b).mean() - 2 * _kernel(a, b).mean()
    )


def _kernel_distance_unscaled(a, b):
    def k(x, y):
        return (x @ y.T + 1) ** 3

    return (
        _off_diagonal_mean(k(a, a))
        + _off_diagonal_mean(k(b, b))
        - 2 * k(a, b).mean()
    )


def _kernel_distance_over_n2(a, b):
    def within(k):
        return (k.sum() - k.diagonal().sum()) / k.shape[0] ** 2

    return (
        within(_kernel(a, a))
        + within(_kernel(b, b))
        - 2 * _kernel(a, b).mean()
    )


_TWINS = _normal(8, 3)

kernel_distance = Exercise(
    name="kernel_distance",
    question="The unbiased estimate of the squared maximum mean discrepancy "
    "with the cubic kernel k(x, y) = (x·y / d + 1)³ (the KID's).",
    reference=_kernel_distance,
    cases=[
        (_normal(6, 3), _normal(8, 3, scale=1.5) + 0.5),
        (_normal(10, 4), _normal(10, 4)),
        (_TWINS, _TWINS.clone()),
        (_normal(5, 1), _normal(7, 1) + 2),
        (_normal(6, 2, scale=20.0), _normal(4, 2, scale=20.0)),
    ],
    labels=[
        "6 and 8 vectors of 3 features from different distributions",
        "10 and 10 vectors of 4 features from the same distribution",
        "the same 8 vectors twice",
        "5 and 7 vectors of a single feature",
        "6 and 4 vectors of 2 large features (spread 20)",
    ],
    mistakes=[
        Mistake(
            "the diagonal kept",
            _kernel_distance_biased,
            "Leave out the pairs i = j in the two within-set averages: "
            "k(a_i, a_i) compares a vector with itself, not with an "
            "independent draw, and keeping it biases the estimate upwards.",
        ),
        Mistake(
            "the kernel without 1/d",
            _kernel_distance_unscaled,
            "The kernel is (x·y / d + 1)³, with the dot product divided by "
            "the number of features d.",
        ),
        Mistake(
            "the cross term once",
            lambda a, b: (
                _off_diagonal_mean(_kernel(a, a))
                + _off_diagonal_mean(_kernel(b, b))
                - _kernel(a, b).mean()
            ),
            "MMD² = E k(a, a') + E k(b, b') - 2 E k(a, b): the cross term "
            "counts twice.",
        ),
        Mistake(
            "the off-diagonal sum over n²",
            _kernel_distance_over_n2,
            "Without the diagonal there are n(n - 1) pairs, not n²: divide "
            "the off-diagonal sum by n(n - 1).",
        ),
    ],
    fallback="Compute the three kernel matrices first (n × n, m × m and "
    "n × m) and check one entry of each by hand; then count how many pairs "
    "each average is over.",
)


# 3. The ratio of two mean times, with its standard error ---------------------


def _mean_and_error(x, correction=1):
    return x.mean(), x.std(correction=correction) / math.sqrt(len(x))


def _ratio(a, b):
    estimate = ratio(a, b)  # the book's, behind the chapter's time_ratio
    return estimate.value, estimate.se


def _ratio_population_sd(a, b):
    (ma, sa), (mb, sb) = _mean_and_error(a, 0), _mean_and_error(b, 0)
    r = ma / mb
    return r, r * math.hypot(sa / ma, sb / mb)


def _ratio_sd_for_se(a, b):
    ma, mb = a.mean(), b.mean()
    r = ma / mb
    return r, r * math.hypot(a.std() / ma, b.std() / mb)


def _ratio_absolute_errors(a, b):
    (ma, sa), (mb, sb) = _mean_and_error(a), _mean_and_error(b)
    return ma / mb, math.hypot(sa, sb)


def _ratio_linear_sum(a, b):
    (ma, sa), (mb, sb) = _mean_and_error(a), _mean_and_error(b)
    r = ma / mb
    return r, r * (sa / ma + sb / mb)


def _ratio_relative_only(a, b):
    (ma, sa), (mb, sb) = _mean_and_error(a), _mean_and_error(b)
    return ma / mb, math.hypot(sa / ma, sb / mb)


ratio_of_means = Exercise(
    name="ratio_of_means",
    question="The ratio of two mean times over independent repeats, with its "
    "standard error to first order.",
    reference=_ratio,
    cases=[
        (_uniform(5, low=90, high=110), _uniform(7, low=0.9, high=1.1)),
        (_uniform(4, low=1, high=3), _uniform(4, low=1, high=3)),
        (torch.full((3,), 2.0, dtype=f64), _uniform(3, low=0.5, high=0.6)),
        (_uniform(2, low=5, high=6), _uniform(6, low=1, high=4)),
        (
            torch.tensor([10.0, 10.5, 9.8, 30.0], dtype=f64),
            _uniform(5, low=0.01, high=0.02),
        ),
    ],
    labels=[
        "5 times near 100 ms against 7 times near 1 ms",
        "4 times against 4 times of the same size",
        "3 identical times of 2 ms against 3 near 0.55 ms",
        "2 times against 6 times",
        "times [10, 10.5, 9.8, 30] (one slow repeat) against 5 near 0.015",
    ],
    mistakes=[
        Mistake(
            "standard deviation dividing by n",
            _ratio_population_sd,
            "Estimate each standard deviation dividing by n - 1 (torch's "
            "default std, np.std(x, ddof=1)): with a few repeats, dividing "
            "by n understates it.",
        ),
        Mistake(
            "standard deviation for standard error",
            _ratio_sd_for_se,
            "The error of a mean is its standard error s / √n, not the "
            "standard deviation s of the repeats.",
        ),
        Mistake(
            "absolute errors combined",
            _ratio_absolute_errors,
            "For a ratio, the relative errors combine: se(r) / r = √((se_a "
            "/ a)² + (se_b / b)²); combining the two standard errors in ms "
            "ignores the sizes of the two means.",
        ),
        Mistake(
            "relative errors added linearly",
            _ratio_linear_sum,
            "Independent errors add in quadrature: √((se_a / a)² + (se_b / "
            "b)²), not se_a / a + se_b / b.",
        ),
        Mistake(
            "relative error returned",
            _ratio_relative_only,
            "√((se_a / a)² + (se_b / b)²) is the relative error of the "
            "ratio: multiply it by the ratio to get its standard error.",
        ),
        Mistake(
            "b over a",
            lambda a, b: _ratio(b, a),
            "The ratio is mean(a) / mean(b), the first argument's time over "
            "the second's.",
        ),
    ],
    fallback="Compute each mean's standard error on its own first and "
    "compare it with a hand calculation on three numbers; then combine the "
    "two as the question's formula says.",
)
