"""The linear pieces of a scalar-input ReLU network, found exactly by walking (SPEC 1.1).

    answer = solve(WRITEUP_NETWORK, lo=Fraction(-3), hi=Fraction(3))
    answer.breakpoints    # (Fraction(-2), Fraction(0))
    answer.pieces[0]      # Piece(start=-3, end=-2, W=((0,),), b=(0,))
    answer.check.passed   # the pieces reproduce a float64 forward pass on a dense grid

Inside one piece every pre-activation is affine in x, z_k(x) = z_k(x0) + (dz_k/dx)(x - x0), so
the piece ends at the nearest root of one of them in the direction of travel. The walk
restarts there with the activation pattern on the far side (`local_linear(..., direction=...)`).
Neighbouring pieces with the same (W, b) are merged: a unit that switches behind a zero
weight changes the pattern but does not bend h, and only bends are breakpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

from cifarctl.errors import UsageError
from cifarctl.theory.network import Network
from cifarctl.theory.numbers import (
    Matrix,
    Vector,
    check_float_size,
    format_array,
    json_array,
    squeeze,
)
from cifarctl.theory.relu import LocalLinear, local_linear, max_error, torch_preactivations

GRID_POINTS = 2001  # dense enough to land inside every piece of a small network


@dataclass(frozen=True)
class Piece:
    """h(x) = W x + b for start <= x <= end."""

    start: Fraction | None  # None: from -infinity
    end: Fraction | None  # None: to +infinity
    W: Matrix  # (out, 1)
    b: Vector  # (out,)


def _next_root(local: LocalLinear, direction: int) -> Fraction | None:
    """The nearest x beyond x0 (in `direction`) where a hidden z of this piece crosses 0."""
    x0 = local.x0[0]
    roots = []
    for step in local.steps[:-1]:  # the output layer has no ReLU, so it cannot bend h
        for z, row in zip(step.z, step.dz_dx, strict=True):
            if row[0] != 0 and (root := x0 - z / row[0]) != x0 and (root > x0) == (direction > 0):
                roots.append(root)
    return min(roots, key=lambda r: abs(r - x0)) if roots else None


def _walk(net: Network, start: Fraction, stop: Fraction | None, direction: int) -> list[Piece]:
    """Pieces from `start` towards `stop` (None: infinity) in `direction` (+1 or -1), in order."""
    pieces = []
    x: Fraction | None = start
    while x is not None and x != stop:
        local = local_linear(net, (x,), direction=(Fraction(direction),))
        end = _next_root(local, direction)
        if stop is not None and (end is None or (end - stop) * direction > 0):
            end = stop
        bounds = (x, end) if direction > 0 else (end, x)
        pieces.append(Piece(*bounds, local.W, local.b))
        x = end
    return pieces


def linear_regions(net: Network, lo: Fraction | None = None,
                   hi: Fraction | None = None) -> tuple[Piece, ...]:
    """The maximal affine pieces of h over [lo, hi] (None: unbounded), left to right.

        linear_regions(WRITEUP_NETWORK)  # (-inf, -2]: 0, [-2, 0]: 1.5 x + 3, [0, inf): 6 x + 3
    """
    if net.in_dim != 1:
        raise UsageError(f"--regions needs a network with one input; this one takes {net.in_dim}")
    if lo is not None and hi is not None and lo >= hi:
        raise UsageError(f"the range must run from low to high, got {format_array(lo)} to "
                         f"{format_array(hi)}")
    anchor = next((v for v in (lo, hi) if v is not None), Fraction(0))
    left = _walk(net, anchor, None, -1) if lo is None else []
    pieces = [*reversed(left), *_walk(net, anchor, hi, +1)]
    merged = [pieces[0]]
    for piece in pieces[1:]:
        if (piece.W, piece.b) == (merged[-1].W, merged[-1].b):
            merged[-1] = replace(merged[-1], end=piece.end)
        else:
            merged.append(piece)
    return tuple(merged)


@dataclass(frozen=True)
class RegionCheck:
    """The pieces against a float64 forward pass on `points` evenly spaced x in [lo, hi]."""

    lo: float
    hi: float
    points: int
    max_abs_error: float
    passed: bool


def check_regions(net: Network, pieces: tuple[Piece, ...], lo: Fraction, hi: Fraction,
                  points: int = GRID_POINTS) -> RegionCheck:
    """Evaluate each grid point with its piece's W x + b and with PyTorch; compare."""
    import torch

    x = torch.linspace(float(lo), float(hi), points, dtype=torch.float64)  # (N,)
    ends = torch.tensor([float(p.end) for p in pieces[:-1]], dtype=torch.float64)  # (P - 1,)
    which = torch.searchsorted(ends, x)  # (N,) index of the piece holding each x
    slope = torch.tensor([[float(r[0]) for r in p.W] for p in pieces], dtype=torch.float64)
    offset = torch.tensor([[float(v) for v in p.b] for p in pieces], dtype=torch.float64)
    predicted = slope[which] * x[:, None] + offset[which]  # (N, out)
    expected = torch_preactivations(net, x[:, None])[-1]  # (N, out)
    if not expected.isfinite().all():
        raise UsageError(f"float64 overflows evaluating the network between {format_array(lo)} "
                         f"and {format_array(hi)}, so the PyTorch check cannot follow; scale the "
                         "weights down")
    return RegionCheck(float(lo), float(hi), points, *max_error(expected, predicted))


def format_bound(value: Fraction | None, infinity: str) -> str:
    return infinity if value is None else format_array(value)


def _bound(value: Fraction | None) -> int | float | None:
    return None if value is None else json_array(value)


@dataclass(frozen=True)
class RegionsAnswer:
    """Everything `cifarctl theory relu-linear --regions` shows."""

    lo: Fraction | None
    hi: Fraction | None
    pieces: tuple[Piece, ...]
    check: RegionCheck

    @property
    def breakpoints(self) -> tuple[Fraction, ...]:
        """Where h bends: the ends shared by neighbouring pieces."""
        return tuple(piece.end for piece in self.pieces[:-1])

    def to_dict(self) -> dict:
        """Plain numbers (`--json`); an unbounded end is null."""
        return {
            "range": [_bound(self.lo), _bound(self.hi)],
            "breakpoints": [json_array(x) for x in self.breakpoints],
            "pieces": [
                {
                    "from": _bound(p.start),
                    "to": _bound(p.end),
                    "W": json_array(squeeze(p.W)),
                    "b": json_array(squeeze(p.b)),
                    "exact": {"W": format_array(squeeze(p.W)), "b": format_array(squeeze(p.b))},
                }
                for p in self.pieces
            ],
            "exact_breakpoints": [format_array(x) for x in self.breakpoints],
            "verified": self.check.passed,
            "grid": {"from": self.check.lo, "to": self.check.hi, "points": self.check.points},
            "max_abs_error": self.check.max_abs_error,
        }


def solve(net: Network, lo: Fraction | None = None, hi: Fraction | None = None) -> RegionsAnswer:
    """The pieces over [lo, hi] and their check on a grid that also covers every breakpoint;
    an unbounded side is checked a margin past the outermost one (straight from there on)."""
    pieces = linear_regions(net, lo, hi)
    known = [v for v in (lo, hi, *(p.end for p in pieces[:-1])) if v is not None] or [Fraction(0)]
    margin = 1 + max(known) - min(known)
    grid_lo = lo if lo is not None else min(known) - margin
    grid_hi = hi if hi is not None else max(known) + margin
    for p in pieces:
        where = f"on the piece from {format_bound(p.start, '-inf')} to {format_bound(p.end, 'inf')}"
        check_float_size((p.W, p.b), f"W or b {where}")
    check_float_size((grid_lo, grid_hi), "the range checked around the breakpoints")
    return RegionsAnswer(lo, hi, pieces, check_regions(net, pieces, grid_lo, grid_hi))
