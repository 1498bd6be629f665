"""The README's recipe examples run as written (issue 19), made tiny: one epoch of vanillacnn
on a small synthetic set, with the example's own recipe options."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from run_helpers import write_synthetic
from typer.testing import CliRunner

from cifarctl.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCK = re.search(r"<!-- recipe-examples:[^\n]*-->\n```\n(.*?)```", README, re.DOTALL)
EXAMPLES = [line for line in (BLOCK.group(1).splitlines() if BLOCK else [])
            if line.startswith("cifarctl train")]


def test_the_readme_has_its_recipe_examples():
    assert len(EXAMPLES) >= 6 and any("--config experiments/" in e for e in EXAMPLES)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory, "readme-recipe", train_per_class=12,
                           test_per_class=2)


@pytest.mark.parametrize("example", EXAMPLES)
def test_each_recipe_example_trains(example, tiny, data_home, tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # `experiments/...` as written
    args = shlex.split(example)[2:]
    if args and args[0] == "resnet32":
        args = args[1:]
    tiny_run = ["vanillacnn", *args, "--dataset", str(tiny), "--epochs", "1", "--imbalance",
                "2", "--batch-size", "16", "--set", "data.val_per_class=2", "--no-track",
                "-q", "--checkpoints", str(tmp_path)]
    result = CliRunner().invoke(app, ["train", *tiny_run])
    assert result.exit_code == 0, result.output
