"""ReLU networks as piecewise-linear maps (SPEC 1.1): exact answers, autograd, kinks, pieces.

References written out here, independently of `cifarctl.theory`: an exact forward pass in
`Fraction`s (`_h`), torch.autograd's Jacobian, and finite differences for one-sided slopes.
"""

import random
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from cifarctl.errors import UsageError
from cifarctl.theory import regions, relu
from cifarctl.theory.network import (
    WRITEUP_NETWORK,
    Layer,
    Network,
    load_network,
    network_from_dict,
)
from cifarctl.theory.numbers import format_number, parse_point, to_fraction

EXAMPLE = Path(__file__).resolve().parents[1] / "experiments" / "theory-writeup-network.yaml"
F = Fraction


def _h(net: Network, x: tuple[Fraction, ...]) -> tuple[Fraction, ...]:
    """h(x) in exact arithmetic, written out independently of the library."""
    a = x
    for k, layer in enumerate(net.layers):
        z = [
            sum((w * v for w, v in zip(row, a, strict=True)), F(0)) + b
            for row, b in zip(layer.W, layer.b, strict=True)
        ]
        a = tuple(z if k == len(net.layers) - 1 else (max(F(0), v) for v in z))
    return a


def _torch_h(net: Network, x: torch.Tensor) -> torch.Tensor:  # (in,) -> (out,)
    for k, layer in enumerate(net.layers):
        w = torch.tensor([[float(v) for v in row] for row in layer.W], dtype=torch.float64)
        x = w @ x + torch.tensor([float(v) for v in layer.b], dtype=torch.float64)
        if k < len(net.layers) - 1:
            x = torch.relu(x)
    return x


def _random_network(rng: random.Random, in_dim: int, depth: int) -> Network:
    """Weights and biases k/d with small d (1/3 and 1/5 are not floats): rational, exact."""
    widths = [in_dim] + [rng.randint(1, 4) for _ in range(depth - 1)] + [rng.randint(1, 2)]

    def q() -> Fraction:
        return F(rng.randint(-6, 6), rng.choice([1, 2, 3, 4, 5]))

    layers = []
    for n_in, n_out in zip(widths, widths[1:], strict=False):
        weight = tuple(tuple(q() for _ in range(n_in)) for _ in range(n_out))
        layers.append(Layer(weight, tuple(q() for _ in range(n_out))))
    return Network(tuple(layers))


# SPEC 1.1's table: x0 -> z1, z2, h, W, b.
SPEC_TABLE = [
    ("2", [F(3), F(2)], [F(7), F(9)], F(15), F(6), F(3)),
    ("1", [F(3, 2), F(3, 2)], [F(9, 2), F(11, 2)], F(9), F(6), F(3)),
    ("-1", [F(-3, 2), F(1, 2)], [F(1), F(3, 2)], F(3, 2), F(3, 2), F(3)),
]


@pytest.mark.parametrize(("x0", "z1", "z2", "h", "w", "b"), SPEC_TABLE)
def test_writeup_table_exactly(x0, z1, z2, h, w, b):
    answer = relu.solve(WRITEUP_NETWORK, parse_point(x0))
    local = answer.local
    assert list(local.steps[0].z) == z1 and list(local.steps[1].z) == z2
    assert local.h == (h,) and ((w,),) == local.W and local.b == (b,)
    assert local.steps[0].a == tuple(max(F(0), v) for v in z1)
    assert tuple(int(v > 0) for v in z1) == local.steps[0].D
    assert not local.on_kink and answer.sides is None and answer.check.passed


def test_example_file_is_the_writeup_network():
    assert load_network(EXAMPLE) == WRITEUP_NETWORK


@pytest.mark.parametrize("seed", range(25))
def test_random_networks_against_autograd(seed):
    rng = random.Random(seed)
    net = _random_network(rng, in_dim=rng.randint(1, 3), depth=rng.randint(1, 4))
    x0 = tuple(F(rng.randint(-9, 9), rng.choice([1, 2, 3])) for _ in range(net.in_dim))
    answer = relu.solve(net, x0)
    assert answer.local.h == _h(net, x0)  # exact, not just close
    x = torch.tensor([float(v) for v in x0], dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: _torch_h(net, v), x)
    exact = torch.tensor([[float(v) for v in row] for row in answer.local.W], dtype=torch.float64)
    if not answer.local.on_kink:  # at a kink float rounding may pick either side
        torch.testing.assert_close(exact, jacobian.reshape(exact.shape), rtol=1e-9, atol=1e-9)
    assert answer.check.passed
    # b = h(x0) - W x0, exactly.
    assert all(
        hb == h - sum((w * v for w, v in zip(row, x0, strict=True)), F(0))
        for hb, h, row in zip(answer.local.b, answer.local.h, answer.local.W, strict=True)
    )


def test_kinks_are_flagged_with_both_one_sided_slopes():
    # x0 = -2 zeroes z1[2] = 0.5 x + 1 (and z2[1]); x0 = 0 zeroes z1[1] = 1.5 x.
    at_minus_two = relu.solve(WRITEUP_NETWORK, (F(-2),))
    assert at_minus_two.local.on_kink
    left, right = at_minus_two.sides
    assert (left.W, left.b, right.W, right.b) == (((F(0),),), (F(0),), ((F(3, 2),),), (F(3),))
    at_zero = relu.solve(WRITEUP_NETWORK, (F(0),))
    assert at_zero.local.on_kink and ((F(3, 2),),) == at_zero.local.W  # relu'(0) = 0
    assert ((F(6),),) == at_zero.sides[1].W
    assert at_zero.to_dict()["W_right"] == 6 and at_zero.to_dict()["on_kink"] is True
    assert not relu.solve(WRITEUP_NETWORK, (F(1, 1000),)).local.on_kink


def test_a_zero_that_cannot_move_is_no_kink():
    # At x0 = -3 both units of layer 1 are off, so z2[0] = 0 + b2[0] = 0 stays 0 nearby:
    # h is flat (W = 0) on both sides and there is no bend to report.
    answer = relu.solve(WRITEUP_NETWORK, (F(-3),))
    assert answer.local.steps[1].z[0] == 0 and not answer.local.on_kink
    assert answer.sides is None and answer.to_dict()["on_kink"] is False
    eps = F(1, 10**6)
    assert _h(WRITEUP_NETWORK, (F(-3) - eps,)) == _h(WRITEUP_NETWORK, (F(-3) + eps,))
    # At -2 the same z2[0] moves on the right (z1[1] turns on), so both are named.
    assert relu.solve(WRITEUP_NETWORK, (F(-2),)).local.zero_crossings == ((0, 1),)


@pytest.mark.parametrize("seed", range(10))
def test_one_sided_slopes_match_finite_differences_at_random_kinks(seed):
    rng = random.Random(100 + seed)
    net = _random_network(rng, in_dim=1, depth=rng.randint(2, 4))
    first = net.layers[0]
    unit = next((i for i, row in enumerate(first.W) if row[0] != 0), None)
    if unit is None:
        pytest.skip("no unit of layer 1 depends on x")
    x0 = -first.b[unit] / first.W[unit][0]  # z1[unit] = 0 exactly
    answer = relu.solve(net, (x0,))
    assert answer.local.on_kink
    eps = F(1, 10**9)
    for side, sign in zip(answer.sides, (-1, 1), strict=True):
        slope = [(hi - lo) / (sign * eps) for hi, lo in zip(_h(net, (x0 + sign * eps,)),
                                                            _h(net, (x0,)), strict=True)]
        assert [row[0] for row in side.W] == slope  # exact: eps is inside the piece


def test_writeup_regions():
    answer = regions.solve(WRITEUP_NETWORK)
    assert answer.breakpoints == (F(-2), F(0))
    assert [(p.start, p.end, p.W[0][0], p.b[0]) for p in answer.pieces] == [
        (None, F(-2), F(0), F(0)),
        (F(-2), F(0), F(3, 2), F(3)),
        (F(0), None, F(6), F(3)),
    ]
    assert answer.check.passed
    bounded = regions.solve(WRITEUP_NETWORK, F(-1), F(5))
    assert bounded.breakpoints == (F(0),) and bounded.pieces[0].start == F(-1)
    assert bounded.pieces[-1].end == F(5)


@pytest.mark.parametrize("seed", range(15))
def test_regions_reproduce_h_on_a_dense_grid(seed):
    rng = random.Random(200 + seed)
    net = _random_network(rng, in_dim=1, depth=rng.randint(2, 4))
    lo, hi = F(-5), F(5)
    answer = regions.solve(net, lo, hi)
    assert answer.check.passed
    pieces = answer.pieces
    assert pieces[0].start == lo and pieces[-1].end == hi
    for before, after in zip(pieces, pieces[1:], strict=False):
        assert before.end == after.start
        assert before.W != after.W  # merged: every breakpoint is a bend
        x = before.end  # continuity, exactly
        assert [w[0] * x + b for w, b in zip(before.W, before.b, strict=True)] == [
            w[0] * x + b for w, b in zip(after.W, after.b, strict=True)
        ]
    grid = [lo + (hi - lo) * F(i, 997) for i in range(998)]  # exact rationals, dense
    for x in grid:
        piece = next(p for p in pieces if p.start <= x <= p.end)
        assert _h(net, (x,)) == tuple(w[0] * x + b for w, b in zip(piece.W, piece.b, strict=True))


def test_regions_unbounded_covers_the_whole_line():
    rng = random.Random(5)
    net = _random_network(rng, in_dim=1, depth=3)
    answer = regions.solve(net)
    assert answer.pieces[0].start is None and answer.pieces[-1].end is None
    assert answer.check.passed
    far = (F(-10**6), F(10**6))
    for x, piece in zip(far, (answer.pieces[0], answer.pieces[-1]), strict=True):
        assert _h(net, (x,)) == tuple(w[0] * x + b for w, b in zip(piece.W, piece.b, strict=True))


def test_regions_need_scalar_input_and_an_ordered_range():
    two_inputs = network_from_dict({"layers": [{"W": [[1, 2]], "b": [0]}]})
    with pytest.raises(UsageError, match="--regions needs a network with one input; this one"):
        regions.solve(two_inputs)
    with pytest.raises(UsageError, match="the range must run from low to high, got 3 to 1.5"):
        regions.solve(WRITEUP_NETWORK, F(3), F(3, 2))


@pytest.mark.parametrize(
    ("text", "value", "shown"),
    [("1.5", F(3, 2), "1.5"), ("3/2", F(3, 2), "1.5"), ("-1", F(-1), "-1"),
     ("0.1", F(1, 10), "0.1"), ("1/3", F(1, 3), "1/3"), ("-0.125", F(-1, 8), "-0.125"),
     ("1e-3", F(1, 1000), "0.001")],
)
def test_numbers_are_exact(text, value, shown):
    assert to_fraction(text) == value and format_number(value) == shown


def test_yaml_numbers_are_read_as_written(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("layers:\n  - W: [[0.1, 3/2]]\n    b: -0.3\n")
    net = load_network(path)
    assert ((F(1, 10), F(3, 2)),) == net.layers[0].W and net.layers[0].b == (F(-3, 10),)
    h = relu.solve(net, parse_point("1,1")).local.h
    assert h == (F(13, 10),)  # 0.1 + 1.5 - 0.3, never 1.2999999999999998


def test_wrong_input_dimension():
    with pytest.raises(UsageError, match=r"has 2 coordinate\(s\) but the network takes 1 input"):
        relu.solve(WRITEUP_NETWORK, parse_point("1,2"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "must be a mapping with a 'layers' list"),
        ("layers: []", "the network has no layers"),
        ("layer: []", "must be a mapping with a 'layers' list"),
        ("layers: [{W: [[1]], b: [0]}]\nextra: 1", r"unknown key\(s\) \['extra'\]"),
        ("layers: [{W: [[1]]}]", r"layer 1 must be a mapping with exactly the keys W \(a list "
         r"of rows\) and b \(a list\), got the keys \['W'\]"),
        ("layers: [{W: [[1]], b: [0]}, [1, 2]]", r"layer 2 must be a mapping with exactly the "
         r"keys W \(a list of rows\) and b \(a list\), got a list \['1', '2'\]"),
        ("layers: [{W: [1, 2], b: [0]}]", "layer 1's W must be a list of rows"),
        ("layers: [{W: [[1, 2], [3]], b: [0, 0]}]", r"rows of different lengths \[1, 2\]"),
        ("layers: [{W: [[1], [2]], b: [0, 0, 0]}]", "layer 1's b has 3 entries but its W has 2"),
        ("layers: [{W: [[1, abc]], b: [0]}]", r"layer 1's W\[0\]\[1\] is 'abc', not a number"),
        (
            "layers: [{W: [[1], [2]], b: [0, 0]}, {W: [[1, 2, 3]], b: [0]}]",
            "layer 2's W has 3 columns but layer 1 has 2 outputs",
        ),
        ("layers: [{W: [[1]], b: [0]]", "is not valid YAML"),
    ],
)
def test_malformed_network_files(tmp_path, text, message):
    path = tmp_path / "net.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        load_network(path)


def test_missing_network_file(tmp_path):
    with pytest.raises(UsageError, match="cannot read network file .*nope.yaml"):
        load_network(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "weights", [("1/3", "2/3", "1/7"), ("0.1", "0.3", "1/3"), ("2/3", "0.1", "0.3")]
)
def test_vector_kinks_with_non_binary_weights_pass_the_check(weights):
    # z1[1] = a x1 + b x2 - 1/3 is exactly 0 on these points, but in float64 it is a hair
    # off 0 either way: autograd then differentiates one side, which the check must allow.
    a, b, c = (to_fraction(w) for w in weights)
    net = network_from_dict(
        {"layers": [{"W": [[a, b], [b, c]], "b": ["-1/3", "0.1"]}, {"W": [[1, -2]], "b": [0]}]}
    )
    for t in (F(1, 3), F(1, 10), F(7, 10), F(-2, 3)):
        answer = relu.solve(net, (t, (F(1, 3) - a * t) / b))
        assert answer.local.on_kink and answer.check.passed


def test_the_check_catches_a_wrong_answer():
    local = relu.local_linear(WRITEUP_NETWORK, (F(2),))
    last = local.steps[-1]
    wrong = relu.LocalLinear(local.x0, (*local.steps[:-1], replace(last, dz_dx=((F(5),),))))
    check = relu.verify_point(WRITEUP_NETWORK, wrong)
    assert not check.passed and check.W_error == 1.0 and check.h_error == 0.0
