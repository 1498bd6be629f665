"""Rich views of the theory answers: what `cifarctl theory` prints without --json.

    Console().print(conv_view(conv.solve(geometry), width=Console().width))
    Console().print(relu_view(WRITEUP_NETWORK, "the write-up's", [relu.solve(...)], None))

Views only arrange what the answers already hold (STYLE principle 5); no math happens here.
"""

from __future__ import annotations

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from cifarctl.theory.conv import ConvAnswer, ConvGeometry, format_pair
from cifarctl.theory.network import Network
from cifarctl.theory.numbers import format_array, squeeze
from cifarctl.theory.regions import RegionsAnswer, format_bound
from cifarctl.theory.relu import LocalLinear, PointAnswer

_UNLIMITED = 1_000_000  # a console width that lets a table measure its natural width


def _verdict(passed: bool) -> Text:
    return Text("passed", style="bold green") if passed else Text("FAILED", style="bold red")


def _check_line(text: str, passed: bool) -> Text:
    return Text.assemble(f"check: {text}: ", _verdict(passed))


def _size_lines(g: ConvGeometry, transpose: bool) -> list[str]:
    """The size formulas with the numbers put in (SPEC 1.1): once if square, else per axis."""
    axes = list(zip(g.size, g.kernel, g.stride, g.padding, strict=True))
    named = [("", axes[0])] if axes[0] == axes[1] else list(zip((" rows", " columns"), axes))
    padded = ", ".join(f"{n} + 2*{p} = {n + 2 * p}{name}" for name, (n, _, _, p) in named)
    output = ", ".join(f"floor(({n} + {2 * p} - {k}) / {s}) + 1 = {(n + 2 * p - k) // s + 1}{name}"
                       for name, (n, k, s, p) in named)
    lines = [f"padded input: H + 2P = {padded} -> {format_pair(g.padded)}",
             f"output: floor((H + 2P - K) / S) + 1 = {output} -> {format_pair(g.output)}"]
    if transpose:
        op = ", ".join(f"({n} + {2 * p} - {k}) mod {s} = {o}"
                       for (n, k, s, p), o in zip(axes, g.output_padding))
        lines.append(f"output_padding: (H + 2P - K) mod S = {op}. The output size floors, so S "
                     "input sizes share one output size; conv_transpose2d needs output_padding to "
                     f"return {format_pair(g.size)} rather than the smallest of them.")
    return lines


def _matrix_table(answer: ConvAnswer, width: int) -> RenderableType:
    m = answer.matrix
    name = "A^T" if m.transpose else "A"
    table = Table(title=f"{name} ({format_pair(m.shape)})", box=box.SIMPLE_HEAD, padding=(0, 1),
                  collapse_padding=True, pad_edge=False)
    table.add_column("", style="bold", no_wrap=True)
    for label in m.col_labels:
        table.add_column(label, justify="center", no_wrap=True)
    for label, row in zip(m.row_labels, m.entries, strict=True):
        table.add_row(label, *(Text("0", style="dim") if e == 0
                               else Text(f"w({e[0]},{e[1]})", style="cyan") for e in row))
    if Console(width=_UNLIMITED).measure(table).maximum > width:  # rich would squeeze cells
        return Text(f"{name} has {m.shape[1]} columns, too wide for {width} characters: its rows "
                    "are below as sums (--json prints the full matrix)", style="dim")
    return table


def conv_view(answer: ConvAnswer, width: int = 100) -> RenderableType:
    """Sizes with their formula, A as a table, y as expressions, the shape line and the check."""
    m, g, check = answer.matrix, answer.matrix.geometry, answer.check
    (rows, cols), product = m.shape, "A^T @ y" if m.transpose else "A @ x"
    setting = (f"input {format_pair(g.size)}, kernel {format_pair(g.kernel)}, stride "
               f"{format_pair(g.stride)}, padding {format_pair(g.padding)}")
    if m.transpose:  # the sizes below are the forward convolution's; A^T runs it backwards
        title = f"Transposed convolution as a matrix A^T, of the convolution with {setting}"
        how = ("(A^T maps the convolution's output back to its input's shape, as "
               "torch.nn.functional.conv_transpose2d)")
        shape = f"x ({rows}) = A^T ({rows}x{cols}) y ({cols}), the transposed convolution"
    else:
        title = f"Convolution as a matrix: {setting}"
        how = "(cross-correlation with zero padding, as torch.nn.functional.conv2d)"
        shape = f"y ({rows}) = A ({rows}x{cols}) x ({cols}), x the row-major input"
    sums = [f"{label} = {expr}" for label, expr in zip(m.row_labels, m.expressions(), strict=True)]
    return Group(
        Text(title, style="bold"),
        Text(how, style="dim"),
        *map(Text, _size_lines(g, m.transpose)),
        Text(""),
        _matrix_table(answer, width),
        *(Text(line) for line in sums),
        Text(""),
        Text(f"shape: {shape}"),
        _check_line(f"{product} vs {check.reference} (random float64), max abs error "
                    f"{check.max_abs_error:.1e}", check.passed),
    )


def _show(value: tuple) -> str:
    return format_array(squeeze(value))


def _show_weights(W: tuple) -> str:
    """W as written in SPEC 1.1: a one-column matrix is `[1.5, 0.5]^T`, apart from a row."""
    column = len(W) > 1 and all(len(row) == 1 for row in W)
    return _show(W) + ("^T" if column else "")


def _add_row(table: Table, *values: str | Text) -> None:
    """Cells as plain Text: "diag(1[z1 > 0])" must not be read as rich markup."""
    table.add_row(*(v if isinstance(v, Text) else Text(v) for v in values))


def _network_view(net: Network, source: str) -> RenderableType:
    widths = " -> ".join(map(str, net.widths))
    return Group(
        Text(f"network ({source}): {widths}, ReLU between layers", style="bold"),
        *(Text(f"  W{k} = {_show_weights(layer.W)}, b{k} = {_show(layer.b)}")
          for k, layer in enumerate(net.layers, start=1)),
    )


def _chain(k: int) -> str:
    """`W3 D2 W2 D1 W1` for layer 3: dz_k/dx as the chain product."""
    return " ".join(f"W{j} D{j - 1}" if j > 1 else "W1" for j in range(k, 0, -1))


def _piece(local: LocalLinear) -> str:
    return f"W = {_show(local.W)}, b = {_show(local.b)}"


def _kink_note(answer: PointAnswer) -> Text:
    pieces = (answer.local, *(answer.sides or ()))  # a unit may move on one side only
    crossings = sorted({unit for piece in pieces for unit in piece.zero_crossings})
    zeros = [f"z{k + 1}[{i}]" for k, i in crossings]  # units 0-based, as the --json lists
    note = f"on a kink: {' = '.join(zeros)} = 0, so the derivative is one-sided"
    if answer.sides is not None:
        note += f": left {_piece(answer.sides[0])}; right {_piece(answer.sides[1])}"
    return Text(note + " (W above takes relu'(0) = 0, as PyTorch)", style="yellow")


def _b_working(local: LocalLinear) -> str:
    """`15 - 6*2 = 3` for a scalar network; just the value otherwise."""
    if len(local.x0) > 1 or len(local.h) > 1:
        return _show(local.b)
    x0 = _show(local.x0)
    x0 = f"({x0})" if local.x0[0] < 0 else x0
    return f"{_show(local.h)} - {_show(local.W)}*{x0} = {_show(local.b)}"


def _steps_table(local: LocalLinear) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 1))
    table.add_column(style="bold")
    table.add_column()
    last = len(local.steps)
    for k, step in enumerate(local.steps, start=1):
        z = f"z{k} = W{k} {'x0' if k == 1 else f'a{k - 1}'} + b{k}"
        if k == last:
            _add_row(table, f"h = {z}", _show(step.z))
            break
        _add_row(table, z, _show(step.z))
        if step.a is not None and step.D is not None:
            _add_row(table, f"a{k} = max(0, z{k})", _show(step.a))
            diagonal = f"diag({', '.join(map(str, step.D))})"
            _add_row(table, f"D{k} = diag(1[z{k} > 0])", diagonal)
        _add_row(table, f"dz{k}/dx = {_chain(k)}", _show(step.dz_dx))
    _add_row(table, f"W = dh/dx = {_chain(last)}", _show(local.W))
    _add_row(table, "b = h - W x0", _b_working(local))
    return table


def _point_view(answer: PointAnswer) -> RenderableType:
    """One point step by step: z, a, D, the chain product W, b, kink and check."""
    local, check = answer.local, answer.check
    return Group(
        Text(f"x0 = {_show(local.x0)}", style="bold"),
        _steps_table(local),
        *([_kink_note(answer)] if local.on_kink else []),
        _check_line("W vs torch.autograd, h vs forward pass: max abs error "
                    f"{check.W_error:.1e}, {check.h_error:.1e}", check.passed),
        Text(""),
    )


def _summary_view(answers: list[PointAnswer]) -> Table:
    """The table x0 | h | W | b of SPEC 1.1, with the kink flag and the check."""
    table = Table(title="h(x) = W x + b around each x0", box=box.SIMPLE_HEAD)
    for name in ("x0", "h", "W", "b", "kink", "check"):
        table.add_column(name, justify="right")
    for a in answers:
        x0, h, W, b = (_show(v) for v in (a.local.x0, a.local.h, a.local.W, a.local.b))
        _add_row(table, x0, h, W, b, "yes" if a.local.on_kink else "", _verdict(a.check.passed))
    return table


def _regions_view(answer: RegionsAnswer) -> RenderableType:
    """Breakpoints, the (W, b) of each piece, and the grid check."""
    span = f"[{format_bound(answer.lo, '-inf')}, {format_bound(answer.hi, 'inf')}]"
    points = ", ".join(format_array(x) for x in answer.breakpoints) or "none"
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("from", "to", "W", "b"):
        table.add_column(name, justify="right")
    for p in answer.pieces:
        start, end = format_bound(p.start, "-inf"), format_bound(p.end, "inf")
        _add_row(table, start, end, _show(p.W), _show(p.b))
    check = answer.check
    return Group(
        Text(f"linear pieces of h over {span}; breakpoints (h bends): {points}", style="bold"),
        table,
        _check_line(f"the pieces vs a forward pass at {check.points} points in [{check.lo:g}, "
                    f"{check.hi:g}], max abs error {check.max_abs_error:.1e}", check.passed),
    )


def relu_view(net: Network, source: str, points: list[PointAnswer],
              found: RegionsAnswer | None) -> RenderableType:
    """The network, each point step by step, the summary table and the pieces, if asked for."""
    parts: list[RenderableType] = [_network_view(net, source), Text("")]
    parts += [_point_view(answer) for answer in points]
    if points:
        parts.append(_summary_view(points))
    if found is not None:
        parts.append(_regions_view(found))
    return Group(*parts)
