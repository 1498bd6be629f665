"""The `cifarctl` root: command-line mistakes are one line, and `--help` stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from data_fixtures import assert_one_line_error, run_cli


@pytest.mark.parametrize(("args", "fragments"), [
    (["train", "vanillacnn", "--epochs", "abc"],
     ["invalid value for '--epochs'", "see 'cifarctl train --help'"]),
    (["train", "vanillacnn", "--lrr", "0.1"], ["no such option: --lrr", "--lr"]),
    (["trian"], ["no such command 'trian'", "'train'", "see 'cifarctl --help'"]),
    (["--bogus"], ["no such option: --bogus"]),
    (["data", "synth", "--train-per-class", "abc"],
     ["'--train-per-class'", "see 'cifarctl data synth --help'"]),
    (["theory", "conv"], ["missing option '--size'"]),
    (["sweep", "a.yaml", "--workers", "many"], ["invalid value for '--workers'"]),
])
def test_parser_mistakes_are_one_line_and_exit_2(args, fragments):
    assert_one_line_error(run_cli(*args), 2, *fragments)


def test_a_command_without_arguments_shows_its_help():
    result = run_cli("train")
    assert "Usage: cifarctl train" in result.output and "error:" not in result.output


def test_help_and_version_import_no_heavy_library():
    """What keeps `cifarctl --help` fast: torch, torchvision, mlflow and pandas are imported
    inside the commands that use them (issue 2)."""
    code = ("import sys; from typer.testing import CliRunner; from cifarctl.cli import app; "
            "r = CliRunner(); assert r.invoke(app, ['--help']).exit_code == 0; "
            "assert r.invoke(app, ['--version']).exit_code == 0; "
            "print(__import__('json').dumps(sorted(m for m in "
            "('torch', 'torchvision', 'mlflow', 'pandas', 'numpy', 'matplotlib') "
            "if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("command", [["train"], ["sweep"], ["eval"], ["report"], ["ui"],
                                     ["data", "synth"]])
def test_help_shows_no_value_for_on_off_flags(command):
    """`--compile` takes no value: its help line says none (typer 0.29 printed `<bool>`),
    while options that take one keep their placeholder."""
    result = run_cli(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "--help" in result.output
    assert "<" in result.output  # e.g. <str>, <int>, <path>
