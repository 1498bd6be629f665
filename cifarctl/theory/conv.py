"""Convolution as a matrix: y = A x for single-channel 2-D cross-correlation (SPEC 1.1).

    m = conv_matrix(ConvGeometry.parse(size="3", kernel="3", stride="4", padding="2"))
    m.expressions()   # ['w(2,2)*x(0,0)', 'w(2,0)*x(0,2)', 'w(0,2)*x(2,0)', 'w(0,0)*x(2,2)']
    verify(m).passed  # A @ x == torch.nn.functional.conv2d on random float64 numbers

x is the row-major flattening of the H x W input, y that of the output; A has one row per
output pixel and one column per input pixel, and its entries are symbolic: 0, or the kernel
index (i, j) whose weight w(i,j) multiplies that input pixel. "Convolution" is PyTorch's
cross-correlation (no kernel flip) with zero padding. The transposed view A^T maps an output
back to the input's shape and is exactly `conv_transpose2d` with the same kernel, stride and
padding, given the right `output_padding` (see `ConvGeometry.output_padding`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product
from typing import Literal

from cifarctl.errors import CifarctlError, UsageError

Pair = tuple[int, int]  # (rows, columns)
Entry = Literal[0] | tuple[int, int]  # 0 or the kernel index (i, j) of the weight w(i,j)

# Random float64 sums of at most K*K products differ from conv2d's by rounding alone
# (~1e-15); anything near this bound is a wrong matrix, not rounding.
_TOLERANCE = 1e-9


def parse_pair(text: str, what: str) -> Pair:
    """`"3"` -> (3, 3) and `"3x5"` -> (3, 5), as typed; `ConvGeometry` checks the ranges."""
    match = re.fullmatch(r"\s*([+-]?\d+)\s*(?:[xX]\s*([+-]?\d+)\s*)?", text)
    if match is None:
        raise UsageError(f"{what} {text!r} is not N or NxM (for example 3 or 3x5)")
    first = int(match[1])
    return first, int(match[2]) if match[2] is not None else first


def format_pair(pair: Pair) -> str:
    return f"{pair[0]}x{pair[1]}"


# Every entry is a Python object (exact numbers, labels): 2**20 of them, a 32x32 input under
# a 3x3 'same' convolution, take about 700 MB; a 64x64 input would take 16 times that.
MAX_ENTRIES = 2**20


@dataclass(frozen=True)
class ConvGeometry:
    """Input size, kernel size, stride and zero padding, each as (rows, columns); validated."""

    size: Pair
    kernel: Pair
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)

    def __post_init__(self) -> None:
        for what, pair, least, rule in (("input size", self.size, 1, "at least 1x1"),
                                        ("kernel", self.kernel, 1, "at least 1x1"),
                                        ("stride", self.stride, 1, "at least 1"),
                                        ("padding", self.padding, 0, "0 or more")):
            if min(pair) < least:
                raise UsageError(f"{what} must be {rule}, got {format_pair(pair)}")
        if any(k > p for k, p in zip(self.kernel, self.padded, strict=True)):
            raise UsageError(f"kernel {format_pair(self.kernel)} is larger than the padded "
                             f"input {format_pair(self.padded)} (input {format_pair(self.size)} "
                             f"plus padding {format_pair(self.padding)} on each side): use a "
                             "smaller kernel or more padding")
        entries = self.size[0] * self.size[1] * self.output[0] * self.output[1]
        if entries > MAX_ENTRIES:
            raise UsageError(f"the matrix of a {format_pair(self.size)} input would have "
                             f"{entries:,} entries; the limit is {MAX_ENTRIES:,}, the size of a "
                             "32x32 'same' convolution's (about 700 MB and seconds to build): "
                             "use a smaller --size")

    @classmethod
    def parse(cls, size: str, kernel: str, stride: str = "1", padding: str = "0") -> ConvGeometry:
        """The geometry from the command line's texts, e.g. `parse("3x5", "3", "2", "1")`."""
        return cls(parse_pair(size, "--size"), parse_pair(kernel, "--kernel"),
                   parse_pair(stride, "--stride"), parse_pair(padding, "--padding"))

    @property
    def padded(self) -> Pair:
        """H + 2P, W + 2P: the zero-padded input the kernel slides over."""
        (h, w), (ph, pw) = self.size, self.padding
        return h + 2 * ph, w + 2 * pw

    @property
    def output(self) -> Pair:
        """floor((H + 2P - K) / S) + 1 per dimension: the kernel's positions inside the padding."""
        (hp, wp), (kh, kw), (sh, sw) = self.padded, self.kernel, self.stride
        return (hp - kh) // sh + 1, (wp - kw) // sw + 1

    @property
    def output_padding(self) -> Pair:
        """(H + 2P - K) mod S: what `conv_transpose2d` must add to give back exactly H x W.

        S input sizes share one output size (it floors); without it the transposed convolution
        returns the smallest, (OH - 1) S - 2P + K.
        """
        (hp, wp), (kh, kw), (sh, sw) = self.padded, self.kernel, self.stride
        return (hp - kh) % sh, (wp - kw) % sw


def _labels(name: str, shape: Pair) -> tuple[str, ...]:
    return tuple(f"{name}({i},{j})" for i in range(shape[0]) for j in range(shape[1]))


@dataclass(frozen=True)
class ConvMatrix:
    """A (or A^T when `transpose`) with symbolic entries and the labels of its rows and columns."""

    geometry: ConvGeometry
    transpose: bool
    entries: tuple[tuple[Entry, ...], ...]  # (rows, cols)
    row_labels: tuple[str, ...]  # "y(r,c)" for A, "x(i,j)" for A^T
    col_labels: tuple[str, ...]

    @property
    def shape(self) -> Pair:
        return len(self.row_labels), len(self.col_labels)

    def expressions(self) -> list[str]:
        """Each row as a sum, e.g. `"w(2,2)*x(0,0)"`, or `"0"` for a row of zeros."""
        sums = []
        for row in self.entries:
            terms = [f"w({e[0]},{e[1]})*{x}" for e, x in zip(row, self.col_labels) if e != 0]
            sums.append(" + ".join(terms) or "0")
        return sums


def conv_matrix(geometry: ConvGeometry, *, transpose: bool = False) -> ConvMatrix:
    """The symbolic A with y = A x (or A^T with transpose=True) for `geometry`."""
    (h, w), (kh, kw) = geometry.size, geometry.kernel
    (sh, sw), (ph, pw) = geometry.stride, geometry.padding
    oh, ow = geometry.output
    rows: list[tuple[Entry, ...]] = []
    for r, c in product(range(oh), range(ow)):
        row: list[Entry] = [0] * (h * w)
        for ki, kj in product(range(kh), range(kw)):
            # Output (r, c) reads padded pixel (r S + ki, c S + kj); minus the padding that is
            # input pixel (i, j), or a zero of the padding if out of range.
            i, j = r * sh + ki - ph, c * sw + kj - pw
            if 0 <= i < h and 0 <= j < w:
                row[i * w + j] = (ki, kj)
        rows.append(tuple(row))
    x_labels, y_labels = _labels("x", geometry.size), _labels("y", geometry.output)
    if transpose:
        return ConvMatrix(geometry, True, tuple(zip(*rows, strict=True)), x_labels, y_labels)
    return ConvMatrix(geometry, False, tuple(rows), y_labels, x_labels)


@dataclass(frozen=True)
class ConvCheck:
    """How A @ v compared with PyTorch's own operator on random float64 numbers."""

    reference: str  # "torch.nn.functional.conv2d" or "...conv_transpose2d"
    max_abs_error: float
    passed: bool


def verify(matrix: ConvMatrix, *, seed: int = 0) -> ConvCheck:
    """Check A @ x against `conv2d` (A^T @ y against `conv_transpose2d`) with random w and x."""
    import torch
    import torch.nn.functional as F

    g = matrix.geometry
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(g.kernel, generator=gen, dtype=torch.float64)  # (KH, KW)
    numeric = torch.zeros(matrix.shape, dtype=torch.float64)  # (rows, cols)
    for r, row in enumerate(matrix.entries):
        for c, entry in enumerate(row):
            if entry != 0:
                numeric[r, c] = weight[entry]
    v = torch.randn(matrix.shape[1], generator=gen, dtype=torch.float64)  # (cols,)
    kernel = weight.view(1, 1, *g.kernel)
    if matrix.transpose:
        reference = "torch.nn.functional.conv_transpose2d"  # (1, 1, H, W)
        expected = F.conv_transpose2d(v.view(1, 1, *g.output), kernel, stride=g.stride,
                                      padding=g.padding, output_padding=g.output_padding)
    else:
        reference = "torch.nn.functional.conv2d"  # (1, 1, OH, OW)
        expected = F.conv2d(v.view(1, 1, *g.size), kernel, stride=g.stride, padding=g.padding)
    if expected.numel() != matrix.shape[0]:  # a wrong size formula, not rounding
        raise CifarctlError(f"{reference} gave {expected.numel()} values but A has "
                            f"{matrix.shape[0]} rows")
    error = (numeric @ v - expected.flatten()).abs().max().item()
    return ConvCheck(reference, error, error <= _TOLERANCE)


@dataclass(frozen=True)
class ConvAnswer:
    """The matrix and its numerical check: everything `cifarctl theory conv` shows."""

    matrix: ConvMatrix
    check: ConvCheck

    def to_dict(self) -> dict:
        """The plain-data answer (`--json`): shapes, the matrix (0 or "w(i,j)"), rows as sums."""
        m, check, g = self.matrix, self.check, self.matrix.geometry
        report = {
            "input_shape": list(g.size),
            "kernel_shape": list(g.kernel),
            "stride": list(g.stride),
            "padding": list(g.padding),
            "padded_shape": list(g.padded),
            "output_shape": list(g.output),
            "transpose": m.transpose,
            "matrix_shape": list(m.shape),
            "rows": list(m.row_labels),
            "columns": list(m.col_labels),
            "matrix": [[e if e == 0 else f"w({e[0]},{e[1]})" for e in row] for row in m.entries],
            "expressions": m.expressions(),
            "verified": check.passed,
            "reference": check.reference,
            "max_abs_error": check.max_abs_error,
        }
        if m.transpose:
            report["output_padding"] = list(g.output_padding)
        return report


def solve(geometry: ConvGeometry, *, transpose: bool = False, seed: int = 0) -> ConvAnswer:
    """A (or A^T) for `geometry`, checked against PyTorch: `solve(ConvGeometry((3, 3), (3, 3)))`."""
    matrix = conv_matrix(geometry, transpose=transpose)
    return ConvAnswer(matrix, verify(matrix, seed=seed))

