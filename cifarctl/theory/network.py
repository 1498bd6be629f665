"""Fully connected ReLU networks with exact rational weights, from YAML or from SPEC 1.1.

    net = load_network(Path("experiments/theory-writeup-network.yaml"))
    net == WRITEUP_NETWORK  # h(x) = W3 max(0, W2 max(0, W1 x + b1) + b2) + b3

Every weight enters as the text the person wrote (the YAML is read with every scalar kept a
string), so 1.5 is exactly 3/2 and 0.1 exactly 1/10: the theory answers are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from cifarctl.errors import UsageError
from cifarctl.theory.numbers import Matrix, Vector, in_float_range, json_array, to_fraction

NETWORK_FORMAT = (
    "Network file (YAML): the layers of h(x) = WL ... max(0, W2 max(0, W1 x + b1) + b2) ... + bL, "
    "a ReLU after every layer but the last. Each W is a list of rows (one row per output unit, "
    "one column per input), each b a list with one entry per row (or a single number for one "
    "unit). Numbers are exact decimals or fractions: 1.5, 3/2, -1. The write-up's network "
    "(the default; also experiments/theory-writeup-network.yaml):\n\n"
    "    layers:\n"
    "      - {W: [[1.5], [0.5]], b: [0, 1]}\n"
    "      - {W: [[1, 2], [2, 1]], b: [0, 1]}\n"
    "      - {W: [[1, 1]], b: [-1]}\n"
)


@dataclass(frozen=True)
class Layer:
    """z = W a + b, with W (out, in) and b (out,)."""

    W: Matrix
    b: Vector


@dataclass(frozen=True)
class Network:
    """Layers applied in order, ReLU after each but the last; shapes validated on creation."""

    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        if not self.layers:
            raise UsageError("the network has no layers")
        for k, layer in enumerate(self.layers, start=1):
            if not layer.W or not layer.W[0]:
                raise UsageError(f"layer {k}'s W is empty")
            widths = sorted({len(row) for row in layer.W})
            if len(widths) > 1:
                raise UsageError(f"layer {k}'s W has rows of different lengths {widths}")
            if len(layer.b) != len(layer.W):
                raise UsageError(f"layer {k}'s b has {len(layer.b)} entries but its W has "
                                 f"{len(layer.W)} rows (one bias per output unit)")
            if k > 1 and len(layer.W[0]) != len(self.layers[k - 2].W):
                raise UsageError(f"layer {k}'s W has {len(layer.W[0])} columns but layer "
                                 f"{k - 1} has {len(self.layers[k - 2].W)} outputs")

    @property
    def in_dim(self) -> int:
        return len(self.layers[0].W[0])

    @property
    def widths(self) -> tuple[int, ...]:
        """(in, hidden..., out), e.g. (1, 2, 2, 1) for the write-up's network."""
        return (self.in_dim, *(len(layer.W) for layer in self.layers))

    def to_dict(self) -> dict:
        """The widths and weights as plain numbers, in the file format's shape."""
        layers = [{"W": json_array(layer.W), "b": json_array(layer.b)} for layer in self.layers]
        return {"widths": list(self.widths), "layers": layers}


def _weight(value: object, what: str) -> Fraction:
    return in_float_range(to_fraction(value, what), what, "scale the network's weights")


def _vector(value: object, what: str) -> Vector:
    if not isinstance(value, list):  # a lone number is a 1-vector (one output unit)
        return (_weight(value, what),)
    return tuple(_weight(v, f"{what}[{i}]") for i, v in enumerate(value))


def _matrix(value: object, what: str) -> Matrix:
    if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
        raise UsageError(f"{what} must be a list of rows, e.g. [[1, 2], [2, 1]] (a column: "
                         "[[1.5], [0.5]])")
    return tuple(_vector(row, f"{what}[{i}]") for i, row in enumerate(value))  # rows are lists


def network_from_dict(data: object, source: str = "network") -> Network:
    """The network in `data` = `{"layers": [{"W": [[...], ...], "b": [...]}, ...]}`, numbers as
    texts ("3/2"), ints or floats (`to_fraction`)."""
    if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
        raise UsageError(f"{source} must be a mapping with a 'layers' list "
                         "(see `cifarctl theory relu-linear --help`)")
    unknown = sorted(set(data) - {"layers", "name", "description"})
    if unknown:
        raise UsageError(f"{source} has unknown key(s) {unknown}; expected 'layers'")
    layers = []
    for k, item in enumerate(data["layers"], start=1):
        if not isinstance(item, dict) or set(item) != {"W", "b"}:
            got = (f"the keys {sorted(item)!r}" if isinstance(item, dict)
                   else f"a {type(item).__name__} {item!r}")
            raise UsageError(f"{source}: layer {k} must be a mapping with exactly the keys W (a "
                             f"list of rows) and b (a list), got {got}")
        layers.append(Layer(W=_matrix(item["W"], f"layer {k}'s W"),
                            b=_vector(item["b"], f"layer {k}'s b")))
    return Network(tuple(layers))


def load_network(path: Path) -> Network:
    """Read a network file (format: `NETWORK_FORMAT`); every problem is a one-line `UsageError`."""
    import yaml  # here, so that the CLI's help (which shows NETWORK_FORMAT) stays light

    name = f"network file {str(path)!r}"
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UsageError(f"{name} is not a text (YAML) file") from None
    except OSError as err:
        raise UsageError(f"cannot read {name}: {err.strerror}") from None
    try:
        # BaseLoader keeps every scalar the string it was written as ("1.5", "3/2"): exact.
        data = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(err, "problem", None) or "syntax error"
        raise UsageError(f"{name} is not valid YAML: {problem}{line}") from None
    return network_from_dict(data, name)


# SPEC 1.1: W1 = [1.5, 0.5]^T, b1 = [0, 1]^T, W2 = [[1, 2], [2, 1]], b2 = [0, 1]^T, ...
WRITEUP_NETWORK = network_from_dict({"layers": [
    {"W": [["1.5"], ["0.5"]], "b": ["0", "1"]},
    {"W": [["1", "2"], ["2", "1"]], "b": ["0", "1"]},
    {"W": [["1", "1"]], "b": ["-1"]},
]}, "the write-up's network")
