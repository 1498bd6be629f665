"""Means, 95 % confidence intervals and paired t-tests over seeds, as pure functions.

    summarize([0.68, 0.70, 0.69])             # Summary(mean=0.69, std=0.01, ci95=0.0248, n=3)
    test = paired_t_test(focal, ce)           # matching seeds, same order
    verdict(test)                             # "within noise (p=0.41, n=3)"

The Student t distribution is SciPy's: `scipy.special.stdtr` and `stdtrit`, the CDF and
quantile that `scipy.stats.t` itself evaluates. They are called directly because a report
makes hundreds of tests: `scipy.stats` would add about a second to every `cifarctl report`
(its import, and ~1 ms per `ttest_rel` call against microseconds here), where the issue-6
budget is 2 s for 500 runs. A single run has no interval: `ci95` is None for n = 1 rather
than a made-up number (issue 6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

CONFIDENCE = 0.95  # two-sided confidence level of every interval in the report
ALPHA = 1 - CONFIDENCE  # a difference with p below this is called significant
POINTS = 100.0  # accuracies are fractions; the report speaks of them in points (x 100)


# Sums run in exact rational arithmetic (a float is a binary fraction, so the conversion is
# exact) and round once at the end: three seeds at 0.1 have mean 0.1 and std 0, where float
# sums give 0.10000000000000002 and 4e-17, noise that the CSV and JSON would carry.


def _exact_mean(values: Sequence[float]) -> Fraction:
    return sum(map(Fraction, values), Fraction(0)) / len(values)


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean, correctly rounded; NaN for an empty sequence (or a NaN in it)."""
    if not values:
        return math.nan
    if not all(math.isfinite(v) for v in values):
        return math.fsum(values) / len(values)
    return float(_exact_mean(values))


def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1 in the denominator); NaN for fewer than 2 values
    or a non-finite one. Exactly 0 when the values are equal."""
    n = len(values)
    if n < 2 or not all(math.isfinite(v) for v in values):
        return math.nan
    m = _exact_mean(values)
    return math.sqrt(sum(((Fraction(v) - m) ** 2 for v in values), Fraction(0)) / (n - 1))


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p for Student's t with `df` > 0 degrees of freedom (real df
    allowed, for Welch)."""
    from scipy.special import stdtrit  # on first use: importing this module stays SciPy-free

    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    return float(stdtrit(df, p))


def two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` > 0 degrees of freedom: the p-value of t."""
    from scipy.special import stdtr

    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    # 2 P(T <= -|t|) rather than 2 (1 - P(T <= |t|)): small p keep their digits
    return float(2.0 * stdtr(df, -abs(t)))


def ci_half_width(std: float, n: int) -> float | None:
    """Half-width of the CONFIDENCE t interval of a mean: t * std / sqrt(n); None if n < 2."""
    if n < 2 or math.isnan(std):
        return None
    return t_quantile((1.0 + CONFIDENCE) / 2.0, n - 1) * std / math.sqrt(n)


@dataclass(frozen=True)
class Summary:
    """Mean of n values with its 95 % interval half-width (None for a single value)."""

    mean: float
    std: float  # sample standard deviation; NaN for n = 1
    ci95: float | None
    n: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "ci95": self.ci95, "std": None if math.isnan(self.std)
                else self.std, "n": self.n}


def summarize(values: Sequence[float]) -> Summary:
    """Mean, sample std, 95 % CI half-width and n of `values` (NaNs dropped first)."""
    kept = [float(v) for v in values if not math.isnan(float(v))]
    std = sample_std(kept)
    return Summary(mean(kept), std, ci_half_width(std, len(kept)), len(kept))


@dataclass(frozen=True)
class TTest:
    """A difference of means with its 95 % interval and two-sided p-value.

    `kind` is "paired" (matching seeds) or "welch" (independent samples); `p` is None when
    no test is possible (a single pair, or one run on a side).
    """

    kind: str
    diff: float
    ci95: float | None
    t: float | None
    df: float | None
    p: float | None
    n: int  # pairs (paired) or the smaller sample size (welch)


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> TTest:
    """Paired t-test of mean(a - b) = 0; `a[i]` and `b[i]` share a seed.

        paired_t_test([0.70, 0.72, 0.71], [0.68, 0.69, 0.70])   # diff 0.02, p 0.074
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    n, d = len(diffs), mean(diffs)
    if n < 2:
        return TTest("paired", d, None, None, None, None, n)
    sd = sample_std(diffs)
    if sd == 0.0:  # identical differences: no spread, the sign alone decides
        return TTest("paired", d, 0.0, None, n - 1, 1.0 if d == 0 else 0.0, n)
    t = d / (sd / math.sqrt(n))
    return TTest("paired", d, ci_half_width(sd, n), t, n - 1, two_sided_p(t, n - 1), n)


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> TTest:
    """Welch's unequal-variance t-test of mean(a) = mean(b), for runs without matching seeds;
    df by the Welch-Satterthwaite equation (Welch 1947)."""
    na, nb = len(a), len(b)
    d = mean(a) - mean(b)
    if na < 2 or nb < 2:
        return TTest("welch", d, None, None, None, None, min(na, nb))
    va, vb = sample_std(a) ** 2 / na, sample_std(b) ** 2 / nb
    se = math.sqrt(va + vb)
    if se == 0.0:
        return TTest("welch", d, 0.0, None, None, 1.0 if d == 0 else 0.0, min(na, nb))
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    t = d / se
    half = t_quantile((1.0 + CONFIDENCE) / 2.0, df) * se
    return TTest("welch", d, half, t, df, two_sided_p(t, df), min(na, nb))


def format_p(p: float) -> str:
    """`p=0.41`, `p=0.02`, `p=0.049`, `p<0.001`: two significant digits, never scientific."""
    if p < 0.001:
        return "p<0.001"
    return f"p={float(f'{p:.2g}'):g}"


def verdict(test: TTest) -> str:
    """The comparison in plain words, differences in POINTS.

        "within noise (p=0.41, n=3)"
        "better by 2.1 ± 1.3 points (p=0.02, n=3)"
        "worse by 4.0 points; a single pair, no test (n=1)"
    """
    size = abs(test.diff) * POINTS
    direction = "better" if test.diff > 0 else "worse"
    label = "n" if test.kind == "paired" else "unpaired, n"
    if test.p is None:
        if test.diff == 0:
            return f"no difference; too few runs for a test ({label}={test.n})"
        what = "a single pair" if test.kind == "paired" else "one run on a side"
        return f"{direction} by {size:.1f} points; {what}, no test ({label}={test.n})"
    where = f"{format_p(test.p)}, {label}={test.n}"
    if test.p >= ALPHA or test.diff == 0:
        return f"within noise ({where})"
    ci = test.ci95 * POINTS if test.ci95 is not None else math.nan
    return f"{direction} by {size:.1f} ± {ci:.1f} points ({where})"
