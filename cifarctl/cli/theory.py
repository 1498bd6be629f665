"""`cifarctl theory`: the write-up's theory problems, answered exactly and checked (SPEC 1.1).

    $ cifarctl theory conv --size 3 --kernel 3 --stride 4 --padding 2
    $ cifarctl theory conv --size 5x4 --kernel 3x2 --stride 2 --padding 1 --transpose --json
    $ cifarctl theory relu-linear --at 2 --at 1 --at -1
    $ cifarctl theory relu-linear --network net.yaml --at 1,2 --json
    $ cifarctl theory relu-linear --regions --range -3 3

Each command parses its options, calls one solver in `cifarctl.theory` per question and
prints the answer (rich, or one JSON object on stdout with --json). A failed check against
PyTorch is a bug, not a user mistake: it is shown, then the command exits 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cifarctl.cli.options import JsonFlag
from cifarctl.errors import CifarctlError, UsageError
from cifarctl.theory.network import NETWORK_FORMAT

# The solvers and rich views are imported inside the commands: `cifarctl --help` stays fast
# (ARCHITECTURE: importing cifarctl.cli is cheap), and torch only loads when a check runs.

app = typer.Typer(
    help="The write-up's theory problems, answered exactly and checked against PyTorch.",
    no_args_is_help=True,
)


@app.command(
    "conv",
    help=(
        "Convolution as a matrix: y = A x, with A symbolic (w(i,j) or 0), checked against "
        "torch.nn.functional.conv2d.\n\n"
        "x is the row-major flattening of the input; convolution means cross-correlation with "
        "zero padding, as in PyTorch. Sizes, kernels, strides and paddings are N or NxM. "
        "The write-up's case, --size 3 --kernel 3 --stride 4 --padding 2, gives "
        "y = (w(2,2)*x(0,0), w(2,0)*x(0,2), w(0,2)*x(2,0), w(0,0)*x(2,2)): a 4x9 A with one "
        "weight per row. --transpose shows A^T, checked against conv_transpose2d."
    ),
)
def conv_command(
    *,
    size: Annotated[str, typer.Option(help="Input size H or HxW.", metavar="HxW")],
    kernel: Annotated[str, typer.Option(help="Kernel size K or KHxKW.", metavar="KxK")],
    stride: Annotated[str, typer.Option(help="Stride S or SHxSW.", metavar="SxS")] = "1",
    padding: Annotated[str, typer.Option(help="Zero padding P or PHxPW.", metavar="P")] = "0",
    transpose: Annotated[bool, typer.Option(
        "--transpose", help="Show A^T, the transposed convolution.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """y = A x for the geometry, as a table, sums and JSON; exit 1 if PyTorch disagrees."""
    from rich.console import Console

    from cifarctl.theory import conv
    from cifarctl.theory.render import conv_view

    geometry = conv.ConvGeometry.parse(size, kernel, stride, padding)
    answer = conv.solve(geometry, transpose=transpose)
    if as_json:
        typer.echo(json.dumps(answer.to_dict()))
    else:
        console = Console()
        console.print(conv_view(answer, width=console.width))
    if not answer.check.passed:
        raise CifarctlError(f"the matrix does not match {answer.check.reference} (see above)")


@app.command(
    "relu-linear",
    help=(
        "A ReLU network is piecewise linear: at each --at x0, h(x) = W x + b with "
        "W = dh/dx = WL D(L-1) ... D1 W1, every step shown exactly and checked against "
        "torch.autograd; --regions finds every linear piece of a scalar network.\n\n"
        + NETWORK_FORMAT
    ),
)
def relu_linear_command(
    *,
    network: Annotated[Path | None, typer.Option(
        metavar="FILE.yaml",
        help="Network (format above); default: the write-up's network.")] = None,
    at: Annotated[list[str] | None, typer.Option(
        metavar="X",
        help="A point x0: 2, 1.5, 3/2, or 1,2 for a vector. Repeat for more.")] = None,
    show_regions: Annotated[bool, typer.Option(
        "--regions", help="List every breakpoint and linear piece (scalar input).")] = False,
    span: Annotated[tuple[str, str] | None, typer.Option(
        "--range", metavar="LO HI", help="Range for --regions (default: all x).")] = None,
    low: Annotated[str | None, typer.Option(
        "--from", metavar="LO", help="Low end for --regions.")] = None,
    high: Annotated[str | None, typer.Option(
        "--to", metavar="HI", help="High end for --regions.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Each --at point step by step, the summary table and --regions; exit 1 on a failed check."""
    from rich.console import Console

    from cifarctl.theory import regions, relu
    from cifarctl.theory.network import WRITEUP_NETWORK, load_network
    from cifarctl.theory.numbers import parse_point, to_fraction
    from cifarctl.theory.render import relu_view

    net = load_network(network) if network is not None else WRITEUP_NETWORK
    source = str(network) if network is not None else "the write-up's"
    if span is not None and (low is not None or high is not None):
        raise UsageError("give the range as --range LO HI or as --from/--to, not both")
    low, high = span if span is not None else (low, high)
    if not show_regions and (low is not None or high is not None):
        raise UsageError("--range, --from and --to need --regions")
    if not at and not show_regions:
        raise UsageError("give a point with --at X (repeat for more), or ask for --regions")
    answers = [relu.solve(net, parse_point(text, "--at")) for text in at or []]
    region_answer = None
    if show_regions:
        lo = to_fraction(low, "the range's low end") if low is not None else None
        hi = to_fraction(high, "the range's high end") if high is not None else None
        region_answer = regions.solve(net, lo, hi)
    if as_json:
        report = {
            "network": {"source": source, **net.to_dict()},
            "points": [a.to_dict() for a in answers],
        }
        if region_answer is not None:
            report["regions"] = region_answer.to_dict()
        typer.echo(json.dumps(report))
    else:
        Console().print(relu_view(net, source, answers, region_answer))
    checks = [a.check for a in answers] + ([region_answer.check] if region_answer else [])
    if not all(check.passed for check in checks):
        raise CifarctlError("the exact answer does not match PyTorch's (see above)")
