"""The README's examples of issue 18's features, run as written on a small synthetic set.

The block under `<!-- examples: issue 18 ...-->` runs line by line (a trailing backslash
continues a line, `#` starts a comment) through the CLI, in a fresh store, after
`cifarctl data synth --train-per-class 40` made `synthetic` small; `RUN_ID` is the id of
the run the first line names `ce-stage1`, and `experiments/` the repository's. The spec
under `<!-- spec example: ...-->` expands to its planned trials.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cifarctl.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def block(marker: str) -> str:
    """The fenced block right after the HTML comment that starts with `marker`."""
    found = re.search(rf"<!-- {re.escape(marker)}[^\n]*-->\n```[a-z]*\n(.*?)```", README,
                      re.DOTALL)
    assert found, f"README has no block under <!-- {marker} -->"
    return found.group(1)


def commands(text: str) -> list[list[str]]:
    joined = re.sub(r"\\\n\s*", " ", text)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def run_id_named(name: str) -> str:
    from cifarctl.tracking.runstore import open_store

    (run,) = [r for r in open_store().find_runs("cifarctl") if r.run_name == name]
    return run.run_id


def test_the_issue_18_examples_run_as_written(mlflow_store, data_home):
    runner = CliRunner()
    synth = runner.invoke(app, ["data", "synth", "--train-per-class", "40",
                                "--test-per-class", "10"])
    assert synth.exit_code == 0, synth.output
    lines = commands(block("examples: issue 18"))
    assert all(words[0] == "cifarctl" for words in lines)
    stage1 = None
    for words in lines:
        # the test runs in its store's folder; the README's paths are the repository's
        args = [stage1 if w == "RUN_ID" else str(ROOT / w) if w.startswith("experiments/")
                else w for w in words[1:]]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        if "ce-stage1" in args:
            stage1 = run_id_named("ce-stage1")
        if args[0] == "eval":
            assert "post-hoc logit adjustment" in result.output
    from cifarctl.tracking.runstore import open_store

    crt = [r for r in open_store().find_runs("cifarctl") if r.params.get("optim.train")
           == "classifier"]
    assert len(crt) == 1 and crt[0].tags["init_from"] == stage1
    assert open_store().get_run(stage1).metrics["eval_la1_test_acc"] >= 0


def test_the_readme_stage_spec_expands_to_crt_on_each_seeds_ce_trial(tmp_path):
    from cifarctl.sweep.spec import expand, load_spec

    spec = tmp_path / "crt.yaml"
    spec.write_text(block("spec example: issue 18"))
    assert yaml.safe_load(spec.read_text())["include"]
    plan = expand(load_spec(spec))
    ce = {t.config.run.seed: t.key for t in plan.trials if t.config.run.init_from is None}
    crt = [t for t in plan.trials if t.config.run.init_from]
    assert len(ce) == len(crt) == 3
    assert all(t.config.run.init_from == f"trial:{ce[t.config.run.seed]}" for t in crt)


@pytest.mark.parametrize("marker", ["examples: issue 18", "spec example: issue 18"])
def test_the_blocks_are_where_the_tests_look(marker):
    assert block(marker).strip()
