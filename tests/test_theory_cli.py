"""`cifarctl theory` end to end: the write-up's answers, --json, errors and exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifarctl.cli import app
from cifarctl.theory import conv
from cifarctl.theory.conv import ConvCheck

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
WRITEUP_CONV = ["theory", "conv", "--size", "3", "--kernel", "3", "--stride", "4", "--padding", "2"]


def run(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "100"})
    # A traceback would leave its exception here; a clean exit leaves none (or SystemExit).
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def run_json(*args: str) -> dict:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # stdout holds the JSON object and nothing else


def test_conv_writeup_case_rich():
    result = run(*WRITEUP_CONV)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "H + 2P = 3 + 2*2 = 7 -> 7x7" in out
    assert "floor((H + 2P - K) / S) + 1 = floor((3 + 4 - 3) / 4) + 1 = 2 -> 2x2" in out
    for line in ("y(0,0) = w(2,2)*x(0,0)", "y(0,1) = w(2,0)*x(0,2)",
                 "y(1,0) = w(0,2)*x(2,0)", "y(1,1) = w(0,0)*x(2,2)"):
        assert line in out
    assert "A (4x9)" in out and "x(2,2)" in out  # the table, with its column labels
    assert "y (4) = A (4x9) x (9)" in out
    assert "torch.nn.functional.conv2d" in out and "passed" in out


def test_conv_writeup_case_json():
    report = run_json(*WRITEUP_CONV)
    assert report["input_shape"] == [3, 3] and report["output_shape"] == [2, 2]
    assert len(report["matrix"]) == 4 and all(len(row) == 9 for row in report["matrix"])
    nonzero = [[(j, e) for j, e in enumerate(row) if e != 0] for row in report["matrix"]]
    assert nonzero == [[(0, "w(2,2)")], [(2, "w(2,0)")], [(6, "w(0,2)")], [(8, "w(0,0)")]]
    assert all(e == 0 or isinstance(e, str) for row in report["matrix"] for e in row)
    assert report["expressions"][0] == "w(2,2)*x(0,0)" and report["verified"] is True


def test_conv_transpose_non_square_json():
    report = run_json(
        "theory", "conv", "--size", "4x5", "--kernel", "3x2", "--stride", "2x3", "--padding", "1",
        "--transpose",
    )
    assert report["transpose"] is True and report["output_shape"] == [2, 2]
    # (4 + 2 - 3) mod 2 = 1 and (5 + 2 - 2) mod 3 = 2: both sizes need output_padding.
    assert report["matrix_shape"] == [20, 4] and report["output_padding"] == [1, 2]
    assert report["reference"] == "torch.nn.functional.conv_transpose2d" and report["verified"]


def test_conv_transpose_rich_explains_output_padding():
    result = run("theory", "conv", "--size", "4", "--kernel", "3", "--stride", "2", "--transpose")
    assert result.exit_code == 0, result.output
    assert "output_padding: (H + 2P - K) mod S = (4 + 0 - 3) mod 2 = 1" in result.stdout
    assert "Transposed convolution as a matrix A^T" in result.stdout
    assert "as torch.nn.functional.conv2d" not in result.stdout
    assert "conv_transpose2d" in result.stdout and "passed" in result.stdout


def test_wide_matrix_falls_back_to_sums():
    result = run("theory", "conv", "--size", "6", "--kernel", "3")
    assert result.exit_code == 0 and "too wide" in result.stdout
    assert "y(3,3) = w(0,0)*x(3,3)" in result.stdout


def test_failed_check_exits_1(monkeypatch):
    monkeypatch.setattr(conv, "verify", lambda m, seed=0: ConvCheck("conv2d", 1.0, False))
    result = run(*WRITEUP_CONV)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: the matrix does not match conv2d (see above)"


SPEC_POINTS = [  # SPEC 1.1: x0, z1, z2, h, W, b
    (2, [3, 2], [7, 9], 15, 6, 3),
    (1, [1.5, 1.5], [4.5, 5.5], 9, 6, 3),
    (-1, [-1.5, 0.5], [1, 1.5], 1.5, 1.5, 3),
]


@pytest.mark.parametrize(
    "network", [[], ["--network", str(EXPERIMENTS / "theory-writeup-network.yaml")]]
)
def test_relu_linear_writeup_table_json(network):
    report = run_json("theory", "relu-linear", *network, "--at", "2", "--at", "1", "--at", "-1")
    assert report["network"]["widths"] == [1, 2, 2, 1]
    for point, (x0, z1, z2, h, w, b) in zip(report["points"], SPEC_POINTS, strict=True):
        assert (point["x0"], point["h"], point["W"], point["b"]) == (x0, h, w, b)
        assert point["z"] == [z1, z2, [h]]
        assert point["a"] == [[max(0, v) for v in z1], z2]
        assert point["D"] == [[int(v > 0) for v in z1], [1, 1]]
        assert point["on_kink"] is False and point["verified"] is True
    assert isinstance(report["points"][0]["h"], int)  # integral numbers print as ints


def test_relu_linear_rich_shows_steps_and_summary():
    result = run("theory", "relu-linear", "--at", "-1", "--at", "3/2")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "z1 = W1 x0 + b1" in out and "[-1.5, 0.5]" in out
    assert "D1 = diag(1[z1 > 0])" in out and "diag(0, 1)" in out
    assert "W = dh/dx = W3 D2 W2 D1 W1" in out
    assert "1.5 - 1.5*(-1) = 3" in out
    assert "x0 = 1.5" in out and "1.4999" not in out
    assert "h(x) = W x + b around each x0" in out and "passed" in out
    # the network as SPEC 1.1 writes it: W1 is a column (2x1), W3 a row (1x2)
    assert "W1 = [1.5, 0.5]^T, b1 = [0, 1]" in out and "W3 = [1, 1], b3 = -1" in out


def test_relu_linear_flags_kinks():
    result = run("theory", "relu-linear", "--at", "0")
    assert result.exit_code == 0
    assert "on a kink: z1[0] = 0" in result.stdout  # 0-based, as in --json
    assert "left W = 1.5, b = 3; right W = 6, b = 3" in result.stdout
    point = run_json("theory", "relu-linear", "--at", "0")["points"][0]
    assert point["on_kink"] is True and (point["W_left"], point["W_right"]) == (1.5, 6)
    # at -3 z2[0] = b2[0] = 0 but nothing feeding it moves: no kink, no note
    result = run("theory", "relu-linear", "--at", "-3")
    assert result.exit_code == 0 and "on a kink" not in result.stdout
    assert "yes" not in result.stdout.split("around each x0")[1]
    assert "on a kink: z1[1] = z2[0] = 0" in run("theory", "relu-linear", "--at", "-2").stdout


def test_relu_linear_regions():
    report = run_json("theory", "relu-linear", "--regions", "--range", "-3", "3")
    found = report["regions"]
    assert found["breakpoints"] == [-2, 0] and found["range"] == [-3, 3]
    assert [(p["from"], p["to"], p["W"], p["b"]) for p in found["pieces"]] == [
        (-3, -2, 0, 0), (-2, 0, 1.5, 3), (0, 3, 6, 3),
    ]
    assert found["verified"] is True and report["points"] == []
    unbounded = run_json("theory", "relu-linear", "--regions", "--from", "-1")["regions"]
    assert unbounded["range"] == [-1, None] and unbounded["pieces"][-1]["to"] is None
    result = run("theory", "relu-linear", "--regions", "--at", "2")
    assert result.exit_code == 0
    assert "breakpoints (h bends): -2, 0" in result.stdout and "-inf" in result.stdout


def test_relu_linear_vector_network():
    report = run_json(
        "theory", "relu-linear", "--network", str(EXPERIMENTS / "theory-vector-network.yaml"),
        "--at", "1,2", "--at", "1/3,-1",
    )
    first, second = report["points"]
    assert first["x0"] == [1, 2] and first["W"] == [[-0.25, 3], [-0.5, -2]]
    assert first["exact"]["h"] == "[5, -19/6]" and first["exact"]["b"] == "[-0.75, 4/3]"
    assert second["D"] == [[1, 0, 0]] and all(p["verified"] for p in report["points"])


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "net.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["conv", "--size", "3x", "--kernel", "3"], "--size '3x' is not N or NxM"),
        (["conv", "--size", "3", "--kernel", "5"], "kernel 5x5 is larger than the padded input"),
        (["conv", "--size", "3", "--kernel", "3", "--stride", "0"], "stride must be at least 1"),
        (["conv", "--size", "3", "--kernel", "3", "--padding", "-1"], "padding must be 0 or more"),
        (["relu-linear"], "give a point with --at X"),
        (["relu-linear", "--at", "abc"], "--at is 'abc', not a number"),
        (["relu-linear", "--at", "1,x"], "coordinate 2 of --at '1,x' is 'x', not a number"),
        (["relu-linear", "--at", "1,2"], "has 2 coordinate(s) but the network takes 1 input(s)"),
        (["relu-linear", "--at", "1", "--range", "0", "1"], "--from and --to need --regions"),
        (["relu-linear", "--regions", "--range", "0", "1", "--to", "2"], "not both"),
        (["relu-linear", "--regions", "--range", "3", "1"], "the range must run from low to high"),
        (["relu-linear", "--regions", "--from", "a"], "the range's low end is 'a', not a number"),
        (["relu-linear", "--network", "missing.yaml", "--at", "1"], "cannot read network file"),
        # beyond float64 the torch cross-check would overflow, or fail a right answer
        (["relu-linear", "--at", "1e400"], "--at '1e400' lies outside 1e-300..1e300"),
        (["relu-linear", "--at", "-1e-400"], "--at '-1e-400' lies outside 1e-300..1e300"),
        # a 1000x1000 input's matrix would need 10^12 entries: refused, not swapped to death
        (["conv", "--size", "1000", "--kernel", "3"], "would have 996,004,000,000 entries"),
        (["conv", "--size", "33", "--kernel", "3", "--padding", "1"], "use a smaller --size"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args, message):
    result = run("theory", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.parametrize(
    ("text", "at", "message"),
    [
        (
            "layers: [{W: [[1], [2]], b: [0, 0]}, {W: [[1, 2, 3]], b: [0]}]",
            "1",
            "layer 2's W has 3 columns but layer 1 has 2 outputs",
        ),
        ("layers: [{W: [[1, oops]], b: [0]}]", "1", "layer 1's W[0][1] is 'oops', not a number"),
        ("layers: [{W: [[1]], b: [0]]", "1", "is not valid YAML"),
        ("- 1\n- 2\n", "1", "must be a mapping with a 'layers' list"),
        ("layers: [{W: [[1, 2]], b: [0]}]", "1", "network takes 2 input(s): write a vector"),
        ("layers: [{W: [[1, 2]], b: [0]}]", "1,2", "--regions needs a network with one input"),
    ],
)
def test_bad_network_files_exit_2(tmp_path, text, at, message):
    path = _write(tmp_path, text)
    result = run("theory", "relu-linear", "--network", path, "--at", at, "--regions")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_a_binary_network_file_exits_2_with_one_line(tmp_path):
    (tmp_path / "net.yaml").write_bytes(bytes(range(256)) * 4)
    result = run("theory", "relu-linear", "--network", str(tmp_path / "net.yaml"), "--at", "1")
    assert result.exit_code == 2 and "is not a text (YAML) file" in result.stderr


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [
        # a weight beyond float64: the check could not even read it
        ("layers: [{W: [[1e400]], b: [0]}, {W: [[1]], b: [0]}]", ["--at", "1"],
         "layer 1's W[0][0] lies outside 1e-300..1e300"),
        ("layers: [{W: [[1]], b: [1e-400]}]", ["--regions"], "layer 1's b[0] lies outside"),
        # weights in range whose exact products are not (1e300 * 1e300 = 1e600)
        ("layers: [{W: [[1e300]], b: [0]}, {W: [[1e300]], b: [0]}]", ["--at", "1"],
         "a pre-activation at x0 = 1 reaches 1e+600, beyond 1e300"),
        ("layers: [{W: [[1e300]], b: [0]}, {W: [[1e300]], b: [0]}]", ["--regions"],
         "W or b on the piece from 0 to inf reaches 1e+600"),
        # exact results in range, but float64's products overflow before they cancel
        ("layers: [{W: [[1e300], [1e300]], b: [0, 0]}, {W: [[1e300, -1e300]], b: [0]}]",
         ["--at", "1"], "float64 overflows evaluating the network at x0 = 1"),
        ("layers: [{W: [[1e300], [1e300]], b: [0, 0]}, {W: [[1e300, -1e300]], b: [0]}]",
         ["--regions"], "float64 overflows evaluating the network between -1 and 1"),
    ],
)
def test_networks_beyond_float64_exit_2_with_one_line(tmp_path, text, mode, message):
    result = run("theory", "relu-linear", "--network", _write(tmp_path, text), *mode)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_cli_module_does_not_import_torch():
    code = "import sys, cifarctl.cli.theory, cifarctl.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
