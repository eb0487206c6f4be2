"""How sure a measured number is, and the sentence it supports.

Every comparison the book draws between two measured quantities goes through
this module, so the prose cannot claim more than the data:

- ``mean``: the mean of per-item values (per test image, per seed, per timing
  repeat) with its standard error;
- ``paired``: the mean difference between two models measured on the same
  items; pairing removes what the items share (an image hard for one model is
  hard for the other), so it is much tighter than two separate means;
- ``ratio``: the ratio of two independent means (timings), error propagated;
- ``bootstrap``: any statistic's standard error and interval by resampling
  (``scipy.stats.bootstrap``), for statistics without a formula;
- ``compare``: the words a difference supports: "lower by 6.2 ± 0.1 nats", or
  "indistinguishable here (0.07 ± 0.90 nats)".

Throughout, "a ± b" is the estimate and one standard error. A difference is
called a difference only when the 95% interval around it excludes zero (about
two standard errors; Student's t for few items, as with three seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95  # the confidence of every interval and every verdict


@dataclass(frozen=True)
class Estimate:
    """A measured value, its standard error, and the degrees of freedom of
    that error (``math.inf`` when the error is not estimated from few items).
    """

    value: float
    se: float
    df: float = math.inf
    unit: str = ""

    def __post_init__(self):
        if not (math.isfinite(self.value) and math.isfinite(self.se)):
            raise ValueError(
                f"an estimate needs finite numbers, got value={self.value}, "
                f"se={self.se}: check the measurements for nan or inf"
            )
        if self.se < 0:
            raise ValueError(f"a standard error is >= 0, got {self.se}")

    @property
    def half_width(self) -> float:
        """Half the width of the 95% interval: t * se."""
        return critical(self.df) * self.se

    @property
    def interval(self) -> tuple[float, float]:
        return self.value - self.half_width, self.value + self.half_width

    @property
    def sign(self) -> int:
        """+1 or -1 when the interval excludes zero, 0 when it does not: what
        a chapter asserts before it writes "larger" or "smaller"."""
        low, high = self.interval
        return 1 if low > 0 else -1 if high < 0 else 0

    def __str__(self) -> str:
        value, se = rounded(self.value, self.se)
        return f"{value} ± {se}" + (f" {self.unit}" if self.unit else "")

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def critical(df: float) -> float:
    """The two-sided 95% critical value: Student's t for ``df`` degrees of
    freedom (4.30 for three seeds), the normal's 1.96 for many items."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(df):
        return float(stats.norm.ppf(0.5 + LEVEL / 2))
    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


def rounded(value: float, se: float) -> tuple[str, str]:
    """Both numbers as strings, rounded where the error says the digits stop:
    the error to two significant digits when they begin with 10-35, else to
    one (the Particle Data Group's rule), the value to the same place."""
    if se == 0:
        return f"{value:.4g}", "0"
    exponent = math.floor(math.log10(se))
    leading = se / 10 ** (exponent - 2)  # three digits, 100 <= leading < 1000
    digits = 2 if leading < 355 or leading >= 950 else 1
    if leading >= 950:
        exponent += 1
    places = max(0, digits - 1 - exponent)
    scale = 10 ** (exponent - digits + 1)

    def to_place(x):
        return f"{math.floor(x / scale + 0.5) * scale:.{places}f}"

    return to_place(value), to_place(se)


def _values(x, name: str) -> np.ndarray:
    try:
        array = np.asarray(
            x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64
        ).ravel()
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name} must be numbers (a list, array or tensor), got "
            f"{type(x).__name__}"
        ) from error
    if array.size < 2:
        raise ValueError(
            f"{name} needs at least 2 values for a standard error, got "
            f"{array.size}: measure more images, seeds or repeats"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains nan or inf")
    return array


def mean(x, unit: str = "") -> Estimate:
    """The mean of per-item values and its standard error, s / sqrt(n)."""
    x = _values(x, "x")
    n = x.size
    return Estimate(x.mean(), x.std(ddof=1) / math.sqrt(n), n - 1, unit)


def paired(a, b, unit: str = "") -> Estimate:
    """The mean of a - b over the same items (the same test images, measured
    with both models): positive when ``a`` is larger."""
    a, b = _values(a, "a"), _values(b, "b")
    if a.shape != b.shape:
        raise ValueError(
            f"a paired difference needs the same items in both: got "
            f"{a.size} and {b.size} values"
        )
    return mean(a - b, unit)


def ratio(a, b) -> Estimate:
    """mean(a) / mean(b) for independent samples (timing repeats), with the
    error of the ratio to first order: r * sqrt((se_a/a)^2 + (se_b/b)^2)."""
    ea, eb = mean(a), mean(b)
    if ea.value <= 0 or eb.value <= 0:
        raise ValueError("a ratio of means needs positive means (timings)")
    r = ea.value / eb.value
    se = r * math.hypot(ea.se / ea.value, eb.se / eb.value)
    return Estimate(r, se, min(ea.df, eb.df), "×")


def bootstrap(
    statistic,
    *samples,
    same_items: bool = True,
    resamples=2000,
    seed: int = 0,
    unit: str = "",
) -> Estimate:
    """Any statistic's standard error by resampling items with replacement
    (``scipy.stats.bootstrap``); ``same_items`` resamples the same items from
    every sample, as for two models measured on the same images."""
    samples = tuple(_values(s, "a sample") for s in samples)
    result = stats.bootstrap(
        samples,
        statistic,
        paired=same_items,
        vectorized=False,
        n_resamples=resamples,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return Estimate(
        float(statistic(*samples)),
        float(result.standard_error),
        math.inf,
        unit,
    )


def compare(
    difference: Estimate, larger: str = "larger", smaller: str = "smaller"
) -> str:
    """The words a difference (or a ratio: unit "×") supports.

    ``larger`` and ``smaller`` name the direction of a positive and a
    negative difference ("worse", "better"). Inside the 95% interval of no
    difference the answer is "indistinguishable here".
    """
    if difference.unit == "×":
        log_ratio = Estimate(
            math.log(difference.value),
            difference.se / difference.value,
            difference.df,
        )
        if log_ratio.sign == 0:
            return f"indistinguishable here ({difference})"
        word = larger if log_ratio.sign > 0 else smaller
        value, se = rounded(difference.value, difference.se)
        return f"{word} by a factor of {value} ± {se}"
    if difference.sign == 0:
        return f"indistinguishable here ({difference})"
    word = larger if difference.sign > 0 else smaller
    size = Estimate(
        abs(difference.value), difference.se, difference.df, difference.unit
    )
    return f"{word} by {size}"
