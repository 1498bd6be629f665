"""A ReLU network is piecewise linear: its local linear map at a point, exactly (SPEC 1.1).

    answer = solve(WRITEUP_NETWORK, (Fraction(2),))
    answer.local.h, answer.local.W, answer.local.b   # (15,), ((6,),), (3,) as Fractions
    answer.check.passed                              # W == torch.autograd, h == forward pass

Around x0 every ReLU acts as a fixed 0/1 diagonal matrix Dk = diag(1[zk > 0]), so h is
affine there: h(x) = W x + b with W = dh/dx = WL D(L-1) W(L-1) ... D1 W1 and b = h(x0) - W x0.
Where some hidden zk is exactly 0 (a kink) the derivative is one-sided: Dk above gives
PyTorch's convention (relu'(0) = 0), and `local_linear(..., direction=d)` gives the affine
piece on the side d points to.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    import torch

# float64 forward and autograd differ from the exact answer by rounding alone; relative to
# the size of the numbers involved, anything above this is a wrong answer.
TOLERANCE = 1e-9


def _dot(u: Vector, v: Vector) -> Fraction:
    return sum((a * b for a, b in zip(u, v, strict=True)), Fraction(0))


def _matvec(m: Matrix, v: Vector) -> Vector:
    return tuple(_dot(row, v) for row in m)


def _matmul(a: Matrix, b: Matrix) -> Matrix:
    columns = tuple(zip(*b, strict=True))
    return tuple(tuple(_dot(row, col) for col in columns) for row in a)


@dataclass(frozen=True)
class LayerStep:
    """One layer at x0: z = W a + b and, for a hidden layer, a = max(0, z) and D."""

    z: Vector  # (units,) pre-activation
    dz_dx: Matrix  # (units, in): the chain product so far, W_k D_(k-1) ... D1 W1
    a: Vector | None  # (units,) max(0, z); None for the output layer, which has no ReLU
    D: tuple[int, ...] | None  # diagonal of Dk: 1 where the unit passes the slope on


@dataclass(frozen=True)
class LocalLinear:
    """h = W x + b around x0, with every intermediate of the computation."""

    x0: Vector
    steps: tuple[LayerStep, ...]

    @property
    def h(self) -> Vector:
        return self.steps[-1].z

    @property
    def W(self) -> Matrix:
        return self.steps[-1].dz_dx

    @property
    def b(self) -> Vector:
        return tuple(h - wx for h, wx in zip(self.h, _matvec(self.W, self.x0), strict=True))

    @property
    def zero_crossings(self) -> tuple[tuple[int, int], ...]:
        """(layer, unit), both from 0, of each hidden z that is exactly 0 and moves with x.

        A z that is 0 with a zero row in dz/dx (say every unit feeding it is off) stays 0
        around x0 and bends nothing: the first unit that can bend h has z = 0 and a nonzero
        row, and the rows up to it are exact (no earlier unit bends), so testing rows here
        finds every kink. Where one is found, later rows hold on this piece only.
        """
        return tuple(
            (k, i)
            for k, step in enumerate(self.steps[:-1])
            for i, (z, row) in enumerate(zip(step.z, step.dz_dx, strict=True))
            if z == 0 and any(row)
        )

    @property
    def on_kink(self) -> bool:
        """A hidden pre-activation crosses 0 at x0: h may bend there (one-sided slopes)."""
        return bool(self.zero_crossings)


def local_linear(net: Network, x0: Vector, *, direction: Vector | None = None,
                 zero_active: frozenset[tuple[int, int]] = frozenset()) -> LocalLinear:
    """The affine piece of h at x0: `local_linear(WRITEUP_NETWORK, (Fraction(-1),)).W == ((1.5,),)`.

    A unit with z exactly 0 counts as inactive (relu'(0) = 0, as PyTorch), except
    - with `direction` d, when z grows along d: the result is then the piece that starts at
      x0 and runs towards x0 + t d (t > 0 small), a one-sided derivative at a kink and the
      next piece of a walk along a line (`regions`);
    - when its (layer, unit) index, both from 0, is in `zero_active`: the side that float
      rounding chose in PyTorch (`verify_point`).
    """
    if len(x0) != net.in_dim:
        raise UsageError(f"the point {format_array(squeeze(x0))} has {len(x0)} coordinate(s) but "
                         f"the network takes {net.in_dim} input(s): write a vector as --at 1,2")

    def active(k: int, i: int, z: Fraction, slope: Vector) -> bool:
        if z != 0:
            return z > 0
        return (k, i) in zero_active or (direction is not None and _dot(slope, direction) > 0)

    a, n = x0, net.in_dim  # the input, with da/dx the identity
    jacobian: Matrix = tuple(tuple(Fraction(int(i == j)) for j in range(n)) for i in range(n))
    zero = (Fraction(0),) * n
    steps = []
    for k, layer in enumerate(net.layers):
        z = tuple(wa + b for wa, b in zip(_matvec(layer.W, a), layer.b, strict=True))
        dz_dx = _matmul(layer.W, jacobian)
        if k == len(net.layers) - 1:
            steps.append(LayerStep(z, dz_dx, None, None))
            break
        D = tuple(int(active(k, i, z[i], dz_dx[i])) for i in range(len(z)))
        a = tuple(zi if d else Fraction(0) for zi, d in zip(z, D, strict=True))
        jacobian = tuple(row if d else zero for row, d in zip(dz_dx, D, strict=True))
        steps.append(LayerStep(z, dz_dx, a, D))
    return LocalLinear(x0, tuple(steps))


def _float64(exact: Vector | Matrix) -> torch.Tensor:
    """The nearest float64 of each number: (n,) or (rows, cols)."""
    import torch

    floats = [[float(v) for v in row] if isinstance(row, tuple) else float(row) for row in exact]
    return torch.tensor(floats, dtype=torch.float64)


def torch_preactivations(net: Network, x: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's z for a batch x (N, in), in float64 with PyTorch's own ops; the last is h:
    the independent reference for the exact answers."""
    import torch

    zs = []
    for layer in net.layers:
        a = torch.relu(zs[-1]) if zs else x
        zs.append(a @ _float64(layer.W).T + _float64(layer.b))  # (N, units)
    return zs


@dataclass(frozen=True)
class PointCheck:
    """The exact h and W against a float64 forward pass and `torch.autograd`."""

    h_error: float
    W_error: float
    passed: bool


def max_error(expected: torch.Tensor, approx: torch.Tensor) -> tuple[float, bool]:
    """(max abs error, whether it is within TOLERANCE of the size of the numbers)."""
    error = (expected - approx.reshape(expected.shape)).abs().max().item()
    return error, error <= TOLERANCE * (1 + expected.abs().max().item())


def verify_point(net: Network, local: LocalLinear) -> PointCheck:
    """Check h against a float64 forward pass and W against `torch.autograd` at `local.x0`.

    At a kink float64 rounding may leave a z that is exactly 0 a hair above 0, and autograd
    then differentiates the piece on that side; W is compared with the exact derivative of
    the same piece (equal to `local.W` wherever no z is exactly 0).
    """
    import torch

    x = _float64(local.x0)  # (in,)
    zs = [z[0] for z in torch_preactivations(net, x[None])]  # per layer (units,)
    jacobian = torch.autograd.functional.jacobian(
        lambda v: torch_preactivations(net, v[None])[-1][0], x
    )  # (out, in)
    rounded_up = frozenset(
        (k, i)
        for k, (step, z) in enumerate(zip(local.steps[:-1], zs, strict=False))
        for i, (exact, approx) in enumerate(zip(step.z, z.tolist(), strict=True))
        if exact == 0 and approx > 0
    )
    torch_side = local_linear(net, local.x0, zero_active=rounded_up) if rounded_up else local
    if not all(z.isfinite().all() for z in (*zs, jacobian)):
        # Every exact number is below 1e300 (`solve`), but float64 products on the way
        # (a huge weight times a huge activation) overflowed before cancelling.
        raise UsageError("float64 overflows evaluating the network at x0 = "
                         f"{format_array(squeeze(local.x0))}, so the PyTorch check cannot follow "
                         "the exact answer; scale the weights down")
    h_error, h_ok = max_error(_float64((local.h,)), zs[-1])
    w_error, w_ok = max_error(_float64(torch_side.W), jacobian)
    return PointCheck(h_error, w_error, h_ok and w_ok)


def _piece(local: LocalLinear, side: str) -> dict:
    return {f"W_{side}": json_array(squeeze(local.W)), f"b_{side}": json_array(squeeze(local.b))}


@dataclass(frozen=True)
class PointAnswer:
    """Everything `cifarctl theory relu-linear --at X` shows for one point."""

    local: LocalLinear
    sides: tuple[LocalLinear, LocalLinear] | None  # (left, right) pieces at a scalar kink
    check: PointCheck

    def to_dict(self) -> dict:
        """Plain numbers (`--json`): x0, h, W, b, the z/a/D of every layer, the kink, the check."""
        local, hidden = self.local, self.local.steps[:-1]
        answer = {"x0": local.x0, "h": local.h, "W": local.W, "b": local.b}
        report = {
            **{k: json_array(squeeze(v)) for k, v in answer.items()},
            "z": [json_array(step.z) for step in local.steps],
            "a": [json_array(step.a) for step in hidden],
            "D": [list(step.D) for step in hidden],
            "dz_dx": [json_array(squeeze(step.dz_dx)) for step in local.steps],
            # the numbers as rationals, e.g. "1/3", where JSON has only floats
            "exact": {k: format_array(squeeze(v)) for k, v in answer.items()},
            "on_kink": local.on_kink,
            "verified": self.check.passed,
            "h_error": self.check.h_error,
            "W_error": self.check.W_error,
        }
        if self.sides is not None:
            report.update(_piece(self.sides[0], "left") | _piece(self.sides[1], "right"))
        return report


def solve(net: Network, x0: Vector) -> PointAnswer:
    """The local linear map at x0, its one-sided pieces at a kink, and the PyTorch check."""
    local = local_linear(net, x0)
    sides = None
    if local.on_kink and net.in_dim == 1:
        sides = (local_linear(net, x0, direction=(Fraction(-1),)),
                 local_linear(net, x0, direction=(Fraction(1),)))
    where = f"at x0 = {format_array(squeeze(x0))}"
    for piece in (local, *(sides or ())):
        check_float_size(tuple(step.z for step in piece.steps), f"a pre-activation {where}")
        check_float_size(tuple(step.dz_dx for step in piece.steps), f"a derivative {where}")
        check_float_size(piece.b, f"b {where}")
    return PointAnswer(local, sides, verify_point(net, local))

