"""The `cifarctl` root: command-line mistakes are one line, and `--help` stays light."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing

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


def test_train_help_fits_in_60_lines_at_100_columns_and_points_to_config_keys():
    """`train --help` printed every config key (138 lines); they are `config keys` now."""
    env = {**os.environ, "COLUMNS": "100"}
    out = subprocess.run([sys.executable, "-m", "cifarctl", "train", "--help"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert len(out.splitlines()) <= 60, out
    assert "cifarctl config keys" in out and "--fuse-seeds" in out


def test_config_keys_lists_every_key_with_its_default_and_help():
    from cifarctl.config import field_help

    table = run_cli("config", "keys")
    assert table.exit_code == 0, table.output
    for key, default, _ in field_help():
        assert key in table.stdout and str(default) in table.stdout, key
    as_json = run_cli("config", "keys", "--json")
    assert as_json.exit_code == 0 and as_json.stderr == ""
    assert json.loads(as_json.stdout) == [{"key": k, "default": d, "help": h}
                                          for k, d, h in field_help()]


def _choices(alias) -> tuple[str, ...]:
    """The values a `cli.options.choice` alias accepts, read from its Literal type."""
    kind = typing.get_args(alias)[0]  # Literal[...], or Literal[...] | None
    if typing.get_origin(kind) is not typing.Literal:
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    return typing.get_args(kind)


def _library_error(call) -> str:
    from cifarctl.errors import UsageError

    with pytest.raises(UsageError) as err:
        call()
    return f"error: {err.value}"


def test_choices_accept_what_the_library_accepts_and_fail_with_its_message(tmp_path):
    """Each choice the CLI declares (its help shows them) takes the values the library
    takes, and a bad one ends in the very line the library's own check prints."""
    from cifarctl.cli import eval as eval_cmd
    from cifarctl.cli import report as report_cmd
    from cifarctl.cli import sweep as sweep_cmd
    from cifarctl.cli import train as train_cmd
    from cifarctl.config import load_config
    from cifarctl.evaluation.run import SPLITS, WHICH, evaluate_target, resolve_target
    from cifarctl.report import FORMATS
    from cifarctl.sweep.request import BACKENDS, SweepRequest

    spec = tmp_path / "s.yaml"
    spec.write_text("grid: {seed: [0]}\n")
    assert _choices(sweep_cmd.Backend) == BACKENDS
    assert _choices(eval_cmd.Which) == WHICH and _choices(eval_cmd.Split) == SPLITS
    assert _choices(report_cmd.Format) == FORMATS
    assert _choices(train_cmd.ImbalanceType) == ("exp", "step")
    assert _choices(train_cmd.TrainPart) == ("all", "classifier")
    run = "0123456789abcdef0123456789abcdef"
    cases = [
        (["sweep", str(spec), "--backend", "slurm"],
         lambda: SweepRequest(spec, backend="slurm").check()),
        (["eval", run, "--which", "worst"], lambda: resolve_target(run, which="worst")),
        # the split is checked before the target is looked at
        (["eval", run, "--split", "train"], lambda: evaluate_target(None, split="train")),
        (["train", "vanillacnn", "--imbalance-type", "linear"],
         lambda: load_config(None, {"data.imbalance_type": "linear"})),
        (["train", "vanillacnn", "--train", "last"],
         lambda: load_config(None, {"optim.train": "last"})),
    ]
    for args, call in cases:
        result = run_cli(*args)
        assert result.exit_code == 2 and result.stderr.strip() == _library_error(call), args
    assert_one_line_error(run_cli("report", "-f", "xml"), 2, "--format must be one of table, "
                          "markdown, csv, json, html, latex, got 'xml'")


def test_an_unknown_set_key_points_to_the_command_that_lists_the_keys():
    """`train --help` no longer lists config keys; `config keys` does."""
    result = run_cli("train", "vanillacnn", "--set", "optim.lrr=0.1")
    assert_one_line_error(result, 2, "unknown config key 'optim.lrr'", "(did you mean "
                          "'optim.lr'?)", "see `cifarctl config keys`")


def test_the_root_help_names_every_data_subcommand():
    from cifarctl.cli import data

    names = [c.name for c in data.app.registered_commands]
    assert {"download", "import", "synth", "info", "list", "rm"} <= set(names)
    line = next(ln for ln in run_cli("--help").output.splitlines() if " data " in ln)
    for name in names:
        assert name in line, (name, line)
