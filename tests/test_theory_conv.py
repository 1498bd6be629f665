"""Convolution as a matrix (SPEC 1.1) against PyTorch's conv2d and conv_transpose2d.

The numeric A here is built by the test from the symbolic entries, and compared with
torch.nn.functional directly: an independent check of `cifarctl.theory.conv`, not of its
own `verify`.
"""

import random

import pytest
import torch
import torch.nn.functional as F

from cifarctl.errors import UsageError
from cifarctl.theory.conv import ConvGeometry, conv_matrix, parse_pair, solve, verify


def _numeric(entries, weight: torch.Tensor) -> torch.Tensor:
    return torch.tensor(
        [[0.0 if e == 0 else weight[e].item() for e in row] for row in entries],
        dtype=torch.float64,
    )


def _random_geometries(count: int, seed: int) -> list[ConvGeometry]:
    rng = random.Random(seed)
    found = []
    while len(found) < count:
        size = (rng.randint(1, 8), rng.randint(1, 8))
        kernel = (rng.randint(1, 5), rng.randint(1, 5))
        stride = (rng.randint(1, 4), rng.randint(1, 4))
        padding = (rng.randint(0, 3), rng.randint(0, 3))
        if all(k <= n + 2 * p for k, n, p in zip(kernel, size, padding, strict=True)):
            found.append(ConvGeometry(size, kernel, stride, padding))
    return found


def test_writeup_case_has_one_weight_per_row():
    # SPEC 1.1: 3x3 input, 3x3 kernel, stride 4, padding 2 -> 7x7 padded, 2x2 output, A 4x9.
    m = conv_matrix(ConvGeometry.parse("3", "3", "4", "2"))
    assert m.geometry.padded == (7, 7) and m.geometry.output == (2, 2)
    assert m.shape == (4, 9)
    assert m.expressions() == ["w(2,2)*x(0,0)", "w(2,0)*x(0,2)", "w(0,2)*x(2,0)", "w(0,0)*x(2,2)"]
    assert [sum(e != 0 for e in row) for row in m.entries] == [1, 1, 1, 1]
    assert m.row_labels == ("y(0,0)", "y(0,1)", "y(1,0)", "y(1,1)")
    assert m.col_labels[:3] == ("x(0,0)", "x(0,1)", "x(0,2)")


def _id(value: object) -> str:
    if isinstance(value, ConvGeometry):
        g = value
        return f"i{g.size}-k{g.kernel}-s{g.stride}-p{g.padding}".replace(", ", "x")
    return str(value)


@pytest.mark.parametrize(
    ("seed", "geometry"), list(enumerate(_random_geometries(40, seed=7))), ids=_id
)
def test_matrix_equals_conv2d_and_its_transpose_conv_transpose2d(seed, geometry):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(geometry.kernel, generator=gen, dtype=torch.float64)
    kernel = weight.view(1, 1, *geometry.kernel)
    a = _numeric(conv_matrix(geometry).entries, weight)  # (OH*OW, H*W)

    x = torch.randn(1, 1, *geometry.size, generator=gen, dtype=torch.float64)
    y = F.conv2d(x, kernel, stride=geometry.stride, padding=geometry.padding)
    assert y.shape[-2:] == geometry.output
    torch.testing.assert_close(a @ x.flatten(), y.flatten(), rtol=0, atol=1e-12)

    at = _numeric(conv_matrix(geometry, transpose=True).entries, weight)  # (H*W, OH*OW)
    torch.testing.assert_close(at, a.T, rtol=0, atol=0)
    v = torch.randn(1, 1, *geometry.output, generator=gen, dtype=torch.float64)
    back = F.conv_transpose2d(
        v,
        kernel,
        stride=geometry.stride,
        padding=geometry.padding,
        output_padding=geometry.output_padding,
    )
    assert back.shape[-2:] == geometry.size
    torch.testing.assert_close(at @ v.flatten(), back.flatten(), rtol=0, atol=1e-12)

    assert verify(conv_matrix(geometry)).passed
    assert verify(conv_matrix(geometry, transpose=True)).passed


def test_output_padding_picks_the_input_size_the_floor_forgot():
    # 4 and 3 rows both give 1 output row with kernel 3, stride 2: (4 - 3) mod 2 = 1.
    g = ConvGeometry((4, 3), (3, 3), (2, 2), (0, 0))
    assert g.output == (1, 1) and g.output_padding == (1, 0)
    y = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    w = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    assert F.conv_transpose2d(y, w, stride=2).shape[-2:] == (3, 3)  # the smaller size
    answer = solve(g, transpose=True)
    assert answer.check.passed and answer.to_dict()["output_padding"] == [1, 0]


def test_json_report_fields():
    report = solve(ConvGeometry.parse("3", "3", "4", "2")).to_dict()
    assert report["input_shape"] == [3, 3] and report["output_shape"] == [2, 2]
    assert report["padded_shape"] == [7, 7] and report["matrix_shape"] == [4, 9]
    assert report["matrix"][0] == ["w(2,2)", 0, 0, 0, 0, 0, 0, 0, 0]
    assert report["verified"] is True and report["max_abs_error"] < 1e-12


@pytest.mark.parametrize(
    ("text", "pair"), [("3", (3, 3)), ("3x5", (3, 5)), (" 2 X 4 ", (2, 4)), ("-1", (-1, -1))]
)
def test_parse_pair(text, pair):
    assert parse_pair(text, "--size") == pair


@pytest.mark.parametrize("text", ["3x", "x3", "3x4x5", "", "a", "1.5"])
def test_parse_pair_rejects_malformed(text):
    with pytest.raises(UsageError, match="is not N or NxM"):
        parse_pair(text, "--size")


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "message"),
    [
        ("3", "5", "1", "0", "kernel 5x5 is larger than the padded input 3x3"),
        ("3x8", "4", "1", "0", "kernel 4x4 is larger than the padded input 3x8"),
        ("3", "3", "0", "0", "stride must be at least 1, got 0x0"),
        ("3", "3", "1x0", "0", "stride must be at least 1, got 1x0"),
        ("3", "3", "1", "-1", "padding must be 0 or more, got -1x-1"),
        ("0x3", "1", "1", "0", "input size must be at least 1x1"),
        ("3", "0", "1", "0", "kernel must be at least 1x1"),
    ],
)
def test_invalid_geometry(size, kernel, stride, padding, message):
    with pytest.raises(UsageError, match=message):
        ConvGeometry.parse(size, kernel, stride, padding)
