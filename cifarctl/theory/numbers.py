"""Exact numbers for the theory problems: parse, print and serialise `Fraction`s.

    >>> format_number(to_fraction("1.5")), format_number(to_fraction("1/3"))
    ('1.5', '1/3')

SPEC 1.1 asks for the ReLU network's intermediates "exactly": 1.5 must print as 1.5, never
1.4999999. So every number enters through its decimal (or p/q) text, never through a binary
float, and leaves as a terminating decimal where one exists and as p/q otherwise.
"""

from __future__ import annotations

from fractions import Fraction

from cifarctl.errors import UsageError


def to_fraction(value: object, what: str = "value") -> Fraction:
    """The exact rational a person wrote: `"1.5"`, `"3/2"`, `"-1"`, `"1e-3"`, an int or a float;
    `UsageError` naming `what` for anything else (text, inf, nan, booleans).

    A float goes through `repr`, its shortest round-trip decimal, so 0.1 means 1/10 (what the
    person typed) rather than the binary float's 3602879701896397/36028797018963968.
    """
    if isinstance(value, bool):
        raise UsageError(f"{what} is {value!r}, not a number (write 1.5, 3/2 or -1)")
    if isinstance(value, Fraction | int):
        return Fraction(value)
    text = repr(value) if isinstance(value, float) else str(value)
    try:
        return Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"{what} is {text!r}, not a number (write 1.5, 3/2 or -1)") from None


def parse_point(text: str, what: str = "point") -> tuple[Fraction, ...]:
    """A point from the command line: `"2"` is a scalar, `"1,2"` (or `"[1, 2]"`) a vector."""
    body = text.strip().removeprefix("[").removesuffix("]")
    parts = body.split(",")
    if not body.strip() or any(not part.strip() for part in parts):
        raise UsageError(f"{what} {text!r} is not a number or a comma-separated vector like 1,2")
    if len(parts) == 1:
        return (in_float_range(to_fraction(body, what), f"{what} {text!r}"),)
    names = [f"coordinate {i} of {what} {text!r}" for i in range(1, len(parts) + 1)]
    return tuple(in_float_range(to_fraction(p, name), name) for p, name in zip(parts, names))


# Points are answered exactly, then checked against a float64 forward pass and autograd:
# beyond float64's range that check would overflow (1e400) or see 0 (1e-400) and fail
# a right answer. Inputs (points, weights) must lie inside it; results of the exact
# arithmetic must not exceed it (a result too small to show only rounds to 0, harmlessly).
_FLOAT_MAX, _FLOAT_MIN = Fraction(10) ** 300, Fraction(1, 10**300)


def in_float_range(q: Fraction, what: str, fix: str = "scale the point") -> Fraction:
    """q itself if 0 or between 1e-300 and 1e300 in size, else a `UsageError` ending in `fix`."""
    if q and not _FLOAT_MIN <= abs(q) <= _FLOAT_MAX:
        raise UsageError(f"{what} lies outside 1e-300..1e300 in size, where the float64 "
                         f"check of the exact answer cannot follow; {fix}")
    return q


def check_float_size(values: object, what: str) -> None:
    """Raise `UsageError` if a number in `values` (nested tuples of Fractions) exceeds 1e300."""
    if isinstance(values, Fraction):
        if abs(values) > _FLOAT_MAX:  # float() cannot hold it: its power of ten by digit count
            power = len(str(abs(values.numerator) // values.denominator)) - 1
            raise UsageError(f"{what} reaches 1e+{power}, beyond 1e300 where the float64 check of "
                             "the exact answer cannot follow; scale the network's weights down")
        return
    for value in values:  # a tuple (vector or matrix)
        check_float_size(value, what)


def _terminates(q: Fraction) -> bool:
    """Whether q has a finite decimal expansion: its denominator has no prime but 2 and 5."""
    d = q.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def format_number(q: Fraction) -> str:
    """`3/2` -> `"1.5"`, `1/3` -> `"1/3"`, `6` -> `"6"`: exact, and as a decimal where possible."""
    if q.denominator == 1:
        return str(q.numerator)
    if not _terminates(q):
        return f"{q.numerator}/{q.denominator}"
    digits = 0
    while (q * 10**digits).denominator != 1:
        digits += 1
    scaled = abs(q.numerator * 10**digits // q.denominator)
    whole, frac = divmod(scaled, 10**digits)
    return f"{'-' if q < 0 else ''}{whole}.{frac:0{digits}d}"


Vector = tuple[Fraction, ...]
Matrix = tuple[Vector, ...]  # rows
Array = Fraction | Vector | Matrix


def squeeze(value: Vector | Matrix) -> Array:
    """Drop axes of length 1, as numpy does: a 1-vector is a number, a 1-column matrix a vector.

    This is how SPEC 1.1 writes a scalar network's answers (h = 15, W = 6), not [[6]].
    """
    if len(value) == 1:
        return squeeze(value[0]) if isinstance(value[0], tuple) else value[0]
    if isinstance(value[0], tuple) and all(len(row) == 1 for row in value):
        return tuple(row[0] for row in value)
    return value


def format_array(value: Array) -> str:
    """`"15"`, `"[3, 2]"` or `"[[1, 2], [2, 1]]"`, each number as `format_number` writes it."""
    if isinstance(value, Fraction):
        return format_number(value)
    return "[" + ", ".join(format_array(v) for v in value) + "]"


def json_array(value: Array) -> int | float | list:
    """The same nesting as plain JSON lists (`--json`): an int where a number is integral, the
    nearest float otherwise."""
    if isinstance(value, Fraction):
        return value.numerator if value.denominator == 1 else float(value)
    return [json_array(v) for v in value]
