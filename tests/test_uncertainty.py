"""The uncertainty module against independent formulas: scipy's standard
error and paired t-test, the t table, the Particle Data Group's rounding
examples, and a Monte Carlo check of the ratio's error."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from vaecourse import uncertainty as u


def test_mean_is_scipys_standard_error():
    x = np.random.default_rng(0).normal(3, 2, 50)
    e = u.mean(x, "nats")
    assert e.value == pytest.approx(x.mean())
    assert e.se == pytest.approx(stats.sem(x))
    assert e.df == 49


def test_a_tensor_is_accepted():
    x = torch.arange(10.0)
    assert u.mean(x).value == pytest.approx(4.5)


def test_paired_matches_the_paired_t_test():
    rng = np.random.default_rng(1)
    a = rng.normal(90, 20, 200)
    b = a - 0.3 + rng.normal(0, 1, 200)
    e = u.paired(a, b)
    t = stats.ttest_rel(a, b)
    assert e.value / e.se == pytest.approx(t.statistic)
    # the verdict is the t-test's at 5%
    assert (e.sign != 0) == (t.pvalue < 0.05)


def test_pairing_is_tighter_than_separate_means():
    rng = np.random.default_rng(2)
    shared = rng.normal(0, 10, 1000)
    a, b = shared + rng.normal(0, 1, 1000), shared + rng.normal(0, 1, 1000)
    separate = math.hypot(u.mean(a).se, u.mean(b).se)
    assert u.paired(a, b).se < separate / 5


def test_critical_values_are_the_t_table():
    assert u.critical(2) == pytest.approx(4.303, abs=1e-3)
    assert u.critical(9) == pytest.approx(2.262, abs=1e-3)
    assert u.critical(math.inf) == pytest.approx(1.960, abs=1e-3)


def test_three_seeds_need_a_wider_interval():
    e = u.mean([1.0, 2.0, 3.0])
    assert e.half_width == pytest.approx(4.303 * 1 / math.sqrt(3), rel=1e-3)


@pytest.mark.parametrize(
    "value, se, expected",
    [
        (6.2134, 0.1012, ("6.21", "0.10")),  # 101 -> two digits
        (0.07, 0.9, ("0.1", "0.9")),  # 900 -> one digit
        (0.07, 0.97, ("0.1", "1.0")),  # 970 -> rounds up to 1.0
        (87.494, 0.2312, ("87.49", "0.23")),
        (1234.5, 23, ("1235", "23")),
        (12345, 450, ("12300", "500")),
    ],
)
def test_rounding_follows_the_pdg_rule(value, se, expected):
    assert u.rounded(value, se) == expected


def test_compare_says_only_what_the_interval_allows():
    big = u.Estimate(6.2, 0.1, unit="nats")
    assert u.compare(big, "worse", "better") == "worse by 6.20 ± 0.10 nats"
    neg = u.Estimate(-6.2, 0.1, unit="nats")
    assert u.compare(neg, "worse", "better") == "better by 6.20 ± 0.10 nats"
    small = u.Estimate(0.07, 0.9, unit="nats")
    assert u.compare(small) == "indistinguishable here (0.1 ± 0.9 nats)"
    # the edge: 1.9 se is not a difference, 2.0 se is
    assert u.Estimate(1.9, 1.0).sign == 0
    assert u.Estimate(-2.0, 1.0).sign == -1


def test_ratio_error_matches_monte_carlo():
    rng = np.random.default_rng(3)
    a, b = rng.normal(2.0, 0.2, 20), rng.normal(1.0, 0.1, 20)
    e = u.ratio(a, b)
    assert e.value == pytest.approx(a.mean() / b.mean())
    draws = rng.normal(a.mean(), u.mean(a).se, 100_000) / rng.normal(
        b.mean(), u.mean(b).se, 100_000
    )
    assert e.se == pytest.approx(draws.std(), rel=0.05)
    assert u.compare(e, "slower", "faster").startswith("slower by a factor")
    assert u.compare(u.ratio([1.0, 1.2, 0.8], [1.0, 1.1, 0.9])).startswith(
        "indistinguishable"
    )


def test_bootstrap_of_the_mean_agrees_with_the_formula():
    x = np.random.default_rng(4).exponential(5.0, 400)
    e = u.bootstrap(np.mean, x)
    assert e.value == pytest.approx(x.mean())
    assert e.se == pytest.approx(stats.sem(x), rel=0.1)


def test_bootstrap_pairs_the_items():
    rng = np.random.default_rng(5)
    shared = rng.normal(0, 10, 300)
    a, b = shared + rng.normal(0, 1, 300), shared + rng.normal(0.5, 1, 300)

    def gap(x, y):
        return np.mean(x - y)

    assert u.bootstrap(gap, a, b).se == pytest.approx(
        u.paired(a, b).se, rel=0.15
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: u.mean([1.0]), "at least 2"),
        (lambda: u.mean([1.0, float("nan")]), "nan or inf"),
        (lambda: u.mean("abc"), "must be numbers"),
        (lambda: u.paired([1.0, 2.0], [1.0, 2.0, 3.0]), "same items"),
        (lambda: u.Estimate(1.0, -1.0), ">= 0"),
        (lambda: u.ratio([-1.0, -2.0], [1.0, 2.0]), "positive"),
    ],
)
def test_bad_input_says_what_is_wrong(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()
