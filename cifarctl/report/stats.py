"""Means, 95 % confidence intervals and paired t-tests over seeds, as pure functions.

    summarize([0.68, 0.70, 0.69])             # Summary(mean=0.69, std=0.01, ci95=0.0248, n=3)
    test = paired_t_test(focal, ce)           # matching seeds, same order
    verdict(test)                             # "within noise (p=0.41, n=3)"

Standard library only (no scipy, no numpy): the Student t distribution comes from the
regularized incomplete beta function, evaluated by its continued fraction (Press et al.,
Numerical Recipes, 3rd ed., section 6.4, with the modified Lentz method of section 5.2),
and its quantile by bisection on the CDF. A single run has no interval: `ci95` is None
for n = 1 rather than a made-up number (issue 6).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

CONFIDENCE = 0.95  # two-sided confidence level of every interval in the report
ALPHA = 1 - CONFIDENCE  # a difference with p below this is called significant

_CF_EPS = 1e-15  # relative accuracy of the continued fraction
_CF_TINY = 1e-300  # Lentz's guard against division by zero
_CF_MAX_TERMS = 500  # converges in ~O(sqrt(max(a, b))) terms; far more than needed here


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


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of I_x(a, b) (Numerical Recipes eq. 6.4.5, modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
    h = d
    for m in range(1, _CF_MAX_TERMS + 1):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),            # even step
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):  # odd step
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _CF_TINY else _CF_TINY
            delta = c * d
            h *= delta
        if abs(delta - 1.0) < _CF_EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0 and 0.0 <= x <= 1.0):
        raise ValueError(f"betainc needs a, b > 0 and x in [0, 1], got {a}, {b}, {x}")
    if x in (0.0, 1.0):
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    front = math.exp(log_front)
    # The fraction converges fast for x < (a+1)/(a+b+2); otherwise use I_x(a,b) = 1 - I_{1-x}(b,a).
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` > 0 degrees of freedom (real df allowed, for Welch).

    P(|T| > |t|) = I_{df/(df+t^2)}(df/2, 1/2) (Abramowitz & Stegun 26.7.1 via 26.5.27).
    """
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_pdf(t: float, df: float) -> float:
    """Density of Student's t with `df` degrees of freedom."""
    log_norm = (math.lgamma((df + 1) / 2) - math.lgamma(df / 2)
                - 0.5 * math.log(df * math.pi))
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))


@functools.lru_cache(maxsize=1024)
def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p; cached per (p, df).

        t_quantile(0.975, 1)   # 12.7062...

    Safeguarded Newton on `t_cdf` (a bisection step whenever Newton would leave the bracket),
    to a relative 1e-12: a handful of CDF evaluations instead of bisection's ~40.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:  # bracket: the t quantile grows without bound as df -> 0
        lo, hi = hi, 2.0 * hi
    t = 0.5 * (lo + hi)
    for _ in range(200):
        err = t_cdf(t, df) - p
        if err < 0:
            lo = t
        else:
            hi = t
        step = t - err / t_pdf(t, df)
        t_next = step if lo < step < hi else 0.5 * (lo + hi)
        if abs(t_next - t) <= 1e-12 * max(1.0, t):
            return t_next
        t = t_next
    return t


def ci_half_width(std: float, n: int, confidence: float = CONFIDENCE) -> float | None:
    """Half-width of the t interval for a mean: t_{(1+c)/2, n-1} * std / sqrt(n); None if n < 2."""
    if n < 2 or math.isnan(std):
        return None
    return t_quantile((1.0 + confidence) / 2.0, n - 1) * std / math.sqrt(n)


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


def _two_sided_p(t: float, df: float) -> float:
    return 2.0 * (1.0 - t_cdf(abs(t), df))


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
    return TTest("paired", d, ci_half_width(sd, n), t, n - 1, _two_sided_p(t, n - 1), n)


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> TTest:
    """Welch's unequal-variance t-test of mean(a) = mean(b), for runs without matching seeds.

    df by the Welch-Satterthwaite equation (Welch 1947).
    """
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
    return TTest("welch", d, half, t, df, _two_sided_p(t, df), min(na, nb))


def format_p(p: float) -> str:
    """`p=0.41`, `p=0.02`, `p=0.049`, `p<0.001`: two significant digits, never scientific."""
    if p < 0.001:
        return "p<0.001"
    return f"p={float(f'{p:.2g}'):g}"


def verdict(test: TTest, *, scale: float = 100.0, unit: str = "points") -> str:
    """The comparison in plain words, differences shown in `unit` (accuracy x 100 = points).

        "within noise (p=0.41, n=3)"
        "better by 2.1 ± 1.3 points (p=0.02, n=3)"
        "worse by 4.0 points; a single pair, no test (n=1)"
    """
    size = abs(test.diff) * scale
    direction = "better" if test.diff > 0 else "worse"
    label = "n" if test.kind == "paired" else "unpaired, n"
    if test.p is None:
        if test.diff == 0:
            return f"no difference; too few runs for a test ({label}={test.n})"
        what = "a single pair" if test.kind == "paired" else "one run on a side"
        return f"{direction} by {size:.1f} {unit}; {what}, no test ({label}={test.n})"
    where = f"{format_p(test.p)}, {label}={test.n}"
    if test.p >= ALPHA or test.diff == 0:
        return f"within noise ({where})"
    ci = test.ci95 * scale if test.ci95 is not None else math.nan
    return f"{direction} by {size:.1f} ± {ci:.1f} {unit} ({where})"
