"""Sweep specs: expansion, trial keys, the shipped specs, and every bad spec (issue 5).

Pure and fast: nothing here trains or touches MLflow. The runs are in test_sweep_run.py.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifarctl.cli import app
from cifarctl.config import later_defaults, load_config
from cifarctl.errors import UsageError
from cifarctl.sweep.spec import (
    KEY_IGNORES,
    expand,
    load_spec,
    parse_spec,
    sweep_key,
    trial_key,
)

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def plan_of(doc: dict, tmp_path: Path = Path("."), **kwargs):
    return expand(parse_spec(doc, source="spec.yaml", root=tmp_path, default_name="spec",
                             **kwargs))


def values(plan, key: str) -> list:
    return [t.config.to_flat()[key] for t in plan.trials]


# ---- expansion -----------------------------------------------------------------------------

def test_grid_is_the_product_in_written_order_last_axis_fastest():
    plan = plan_of({"grid": {"loss.name": ["ce", "focal"], "seed": [0, 1, 2]}})
    assert [t.overrides for t in plan.trials] == [
        {"loss.name": n, "run.seed": s} for n in ("ce", "focal") for s in (0, 1, 2)]
    assert [t.index for t in plan.trials] == list(range(6))
    assert len({t.key for t in plan.trials}) == 6


def test_exclude_drops_matching_grid_trials_and_include_is_crossed_with_unnamed_axes():
    """CE is not crossed with gamma: exclude it from the grid, include it once per seed."""
    plan = plan_of({
        "grid": {"loss.name": ["ce", "focal"], "loss.gamma": [0.5, 2], "seed": [0, 1]},
        "exclude": [{"loss.name": "ce"}],
        "include": [{"loss.name": "CE", "gamma": 1}],  # aliases and spellings resolve
    })
    rows = [(t.config.loss.name, t.config.loss.gamma, t.config.run.seed) for t in plan.trials]
    assert rows == [("focal", 0.5, 0), ("focal", 0.5, 1), ("focal", 2.0, 0), ("focal", 2.0, 1),
                    ("ce", 1.0, 0), ("ce", 1.0, 1)]
    assert plan.trials[4].overrides == {"run.seed": 0, "loss.name": "ce", "loss.gamma": 1.0}


def test_exclude_matches_resolved_values_including_the_base():
    # `beta: 0` matches 0.0; the base's gamma 1 counts as a value of every trial
    plan = plan_of({"grid": {"loss.beta": [0.0, 0.9], "loss.name": ["focal", "ce"]},
                    "exclude": [{"beta": 0, "loss.name": "Focal"}, {"loss.gamma": 1,
                                                                     "loss.name": "ce"}]})
    assert [(t.config.loss.beta, t.config.loss.name) for t in plan.trials] == [(0.9, "focal")]


def test_equal_configs_merge_into_one_trial():
    plan = plan_of({"base": {"loss": {"name": "ce"}}, "grid": {"seed": [0, 1]},
                    "include": [{"loss.name": "ce"}, {"loss.name": "focal"}]})
    assert plan.merged == 2
    assert [(t.config.loss.name, t.config.run.seed) for t in plan.trials] == [
        ("ce", 0), ("ce", 1), ("focal", 0), ("focal", 1)]


def test_include_alone_and_list_valued_fields():
    plan = plan_of({"include": [{"optim.steps": [40, 45]}, {"optim.steps": [100, 101]}]})
    assert values(plan, "optim.steps") == [[40, 45], [100, 101]]
    plan = plan_of({"grid": {"optim.steps": [[40, 45], []]}})
    assert values(plan, "optim.steps") == [[40, 45], []]


def test_random_keeps_a_stable_seeded_subset_in_plan_order():
    doc = {"grid": {"loss.beta": [0, 0.9, 0.99, 0.999], "seed": [0, 1, 2]}}
    full = plan_of(doc)
    a = plan_of({**doc, "random": {"n": 5, "seed": 7}})
    b = plan_of({**doc, "random": {"n": 5, "seed": 7}})
    c = plan_of({**doc, "random": {"n": 5, "seed": 8}})
    assert [t.key for t in a.trials] == [t.key for t in b.trials]
    assert len(a.trials) == 5 and a.sampled_from == 12
    order = [t.key for t in full.trials]
    assert [order.index(t.key) for t in a.trials] == sorted(order.index(t.key) for t in a.trials)
    assert [t.index for t in a.trials] == list(range(5))
    assert {t.key for t in a.trials} != {t.key for t in c.trials}
    # the subset is the n smallest sha256("seed:key"): independent of Python's RNG
    ranked = sorted(order, key=lambda k: hashlib.sha256(f"7:{k}".encode()).hexdigest())
    assert {t.key for t in a.trials} == set(ranked[:5])


# ---- keys -----------------------------------------------------------------------------------

FIXED = {"base": {"model": {"name": "resnet20"}, "data": {"dataset": "synthetic",
                                                          "imbalance": 10},
                  "optim": {"epochs": 2}},
         "grid": {"loss.beta": [0.0, 0.99], "seed": [0, 1]}}


def test_trial_key_is_sha256_of_the_canonical_config_and_hard_coded_stable():
    """If this fails, every existing sweep loses track of its finished trials: a config
    field was added or a default changed. Only change the keys below on purpose."""
    plan = plan_of(FIXED)
    assert [t.key for t in plan.trials] == ["0fe13898e1e3", "6216d879a595", "7e0de54d5717",
                                            "5d3e59440820"]
    assert plan.key == "22787909ce05"
    # the first trial's resolved config, written out by hand, less the four ignored fields
    reference = {
        "data.augment": True, "data.dataset": "synthetic", "data.imbalance": 10.0,
        "data.imbalance_type": "exp", "data.val_per_class": None, "loss.alpha": 0.5,
        "loss.beta": 0.0, "loss.drw_epoch": None, "loss.gamma": 1.0, "loss.max_m": 0.5,
        "loss.name": "ce", "loss.s": 30.0, "model.name": "resnet20", "optim.batch_size": 128,
        "optim.decay": 0.1, "optim.epochs": 2, "optim.lr": 0.1, "optim.momentum": 0.9,
        "optim.nesterov": False, "optim.steps": [160, 180], "optim.warmup": 5,
        "optim.weight_decay": 0.0002, "run.save_best": True, "run.seed": 0,
        "run.select_metric": "val_acc"}
    canonical = json.dumps(reference, sort_keys=True, separators=(",", ":"))
    assert hashlib.sha256(canonical.encode()).hexdigest()[:12] == "0fe13898e1e3"
    assert sweep_key(list(reversed(plan.trials))) == plan.key


def test_trial_key_ignores_where_and_how_fast_but_nothing_else():
    cfg = load_config(None, {"model.name": "vanillacnn"})
    same = load_config(None, {"model.name": "VanillaCNN", "run.device": "cpu",
                              "run.compile": True, "run.experiment": "x", "run.run_name": "y"})
    assert trial_key(cfg) == trial_key(same)
    for key, value in [("run.seed", 1), ("loss.beta", 0.5), ("optim.steps", [1]),
                       ("data.dataset", "synthetic"), ("run.save_best", False)]:
        assert trial_key(load_config(None, {"model.name": "vanillacnn", key: value})) != \
            trial_key(cfg), key


def test_trial_key_holds_the_classifier_head_as_resolved():
    """`auto` and the head it resolves to are one trial; a linear head leaves the key as it
    was before `model.classifier` existed (the hard-coded keys above), a cosine one does not."""
    def key(**values):
        return trial_key(load_config(None, {"model.name": "vanillacnn", **values}))

    ce, ldam = {"loss.name": "ce"}, {"loss.name": "ldam"}
    assert key(**ce) == key(**ce, **{"model.classifier": "linear"})
    assert key(**ce) != key(**ce, **{"model.classifier": "normed"})
    assert key(**ldam) == key(**ldam, **{"model.classifier": "normed"})
    assert key(**ldam) != key(**ldam, **{"model.classifier": "linear"})
    later = later_defaults()  # keys added since, at their default: not in the key either
    without_head = {k: v for k, v in load_config(None, {"model.name": "vanillacnn", **ce})
                    .to_flat().items() if k not in KEY_IGNORES and k != "model.classifier"
                    and not (k in later and v == later[k])}
    canonical = json.dumps(without_head, sort_keys=True, separators=(",", ":"))
    assert hashlib.sha256(canonical.encode()).hexdigest()[:12] == key(**ce)


def test_cli_set_changes_keys_device_and_experiment_do_not():
    base = plan_of(FIXED)
    moved = plan_of(FIXED, overrides={"run.device": "cpu"}, experiment="elsewhere")
    assert [t.key for t in moved.trials] == [t.key for t in base.trials]
    assert {t.config.run.experiment for t in moved.trials} == {"elsewhere"}
    shorter = plan_of(FIXED, overrides={"optim.epochs": 1})
    assert not {t.key for t in shorter.trials} & {t.key for t in base.trials}


# ---- the shipped specs ------------------------------------------------------------------------

def without_experiment(cfg):
    return {k: v for k, v in cfg.to_flat().items() if k != "run.experiment"}


def test_beta_sweep_is_the_write_ups_study_with_three_seeds():
    plan = expand(load_spec(EXPERIMENTS / "beta-sweep.yaml"))
    assert len(plan.trials) == 12 and plan.spec.experiment == "beta-sweep"
    arms = sorted({(t.config.loss.name, t.config.loss.beta) for t in plan.trials})
    assert arms == [("ce", 0.0), ("focal", 0.9), ("focal", 0.99), ("focal", 0.999)]
    for trial in plan.trials:
        seed = {"run.seed": trial.config.run.seed}
        if trial.config.loss.name == "ce":
            reference = load_config(EXPERIMENTS / "resnet32-ce.yaml", seed)
        else:
            reference = load_config(EXPERIMENTS / "resnet32-cb-focal.yaml",
                                    {**seed, "loss.beta": trial.config.loss.beta})
        assert without_experiment(trial.config) == without_experiment(reference)


def test_ldam_drw_matches_the_single_run_configs_at_lt100():
    plan = expand(load_spec(EXPERIMENTS / "ldam-drw.yaml"))
    assert len(plan.trials) == 16
    lt100 = {t.config.loss.name + ("-drw" if t.config.loss.drw_epoch else ""): t.config
             for t in plan.trials
             if t.config.data.imbalance == 100 and t.config.data.imbalance_type == "exp"}
    for name, file in [("ce", "resnet32-lt100-ce.yaml"), ("focal", "resnet32-lt100-cb-focal.yaml"),
                       ("ldam-drw", "resnet32-lt100-ldam-drw.yaml")]:
        assert without_experiment(lt100[name]) == without_experiment(
            load_config(EXPERIMENTS / file)), name


def test_cui2019_grid_has_every_published_row_once():
    plan = expand(load_spec(EXPERIMENTS / "cui2019-table2.yaml"))
    assert len(plan.trials) == 130
    rows = {(t.config.data.imbalance, t.config.loss.name, t.config.loss.beta,
             t.config.loss.gamma) for t in plan.trials}
    assert len(rows) == 130
    assert {r[0] for r in rows} == {200, 100, 50, 20, 10, 1}
    assert {r[3] for r in rows if r[1] != "sigmoid-focal"} == {1.0}
    assert {r[2] for r in rows if r[0] == 1} == {0.0}
    assert (100, "sigmoid-focal", 0.9999, 1.0) in rows and (100, "ce", 0.0, 1.0) in rows
    assert all(t.config.optim.epochs == 200 for t in plan.trials)


def test_demo_sweep_is_tiny_and_synthetic():
    plan = expand(load_spec(EXPERIMENTS / "demo-sweep.yaml"))
    assert len(plan.trials) == 6
    assert {(t.config.loss.name, t.config.run.seed) for t in plan.trials} == {
        (loss, seed) for loss in ("ce", "focal") for seed in (0, 1, 2)}
    assert all(t.config.data.dataset == "synthetic" and t.config.optim.epochs <= 8
               and t.config.model.name == "vanillacnn" for t in plan.trials)


# ---- bad specs: one line, exit 2 ------------------------------------------------------------

@pytest.mark.parametrize("doc, message", [
    ({"gird": {"seed": [0]}}, "unknown spec key 'gird' (did you mean 'grid'?)"),
    ({"grid": {"optim.lrr": [0.1]}}, "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ({"grid": {"loss.beta": []}}, "grid axis loss.beta is empty"),
    ({"grid": {"loss.beta": 0.9}}, "grid axis loss.beta must be a list of values"),
    ({"grid": {"loss.beta": [0.9, 1.5]}}, "trial {loss.beta=1.5}: loss.beta must be in [0, 1)"),
    ({"grid": {"loss.name": ["ce", "hinge"]}}, "unknown loss 'hinge'"),
    ({"grid": {"optim.steps": [40, 45]}}, "grid axis optim.steps takes lists"),
    ({"grid": {"seed": [0], "run.seed": [1]}}, "grid names run.seed twice"),
    ({"grid": {"run.experiment": ["a"]}}, "set the spec's `experiment:`"),
    ({"base": {"loss": {"beta": 2}}, "grid": {"seed": [0]}}, "base config: loss.beta"),
    ({"base": "missing.yaml", "grid": {"seed": [0]}}, "base config not found"),
    ({"base": {"optim": {"epochs": 2}}}, "the spec has no trials"),
    ({"include": [{}]}, "include[0] must be a non-empty mapping"),
    ({"include": {"seed": 1}}, "include must be a list of mappings"),
    ({"grid": {"seed": [0]}, "exclude": [{"seed": 0}]}, "exclude removes every trial"),
    ({"grid": {"seed": [0]}, "exclude": [{"loss.beta": 3}]}, "exclude[0]: loss.beta"),
    ({"grid": {"seed": [0, 1]}, "random": {"n": 3}}, "random.n=3 but the spec has only 2"),
    ({"grid": {"seed": [0]}, "random": {"count": 3}}, "random must be a mapping"),
    ([1, 2], "a sweep spec must be a YAML mapping"),
])
def test_bad_spec_raises_one_clear_usage_error(doc, message, tmp_path):
    with pytest.raises(UsageError) as err:
        plan_of(doc, tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).count(".yaml:") <= 1  # the spec is named once, not once per layer


def test_set_may_not_override_a_varied_key():
    with pytest.raises(UsageError, match="the sweep varies loss.beta"):
        plan_of({"grid": {"loss.beta": [0, 0.9]}}, overrides={"beta": 0.5})


def test_base_file_is_found_beside_the_spec_in_either_dialect(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "writeup.yaml").write_text(
        "Train:\n  learning_rate: 0.01\n  epochs: 7\nnetwork:\n  model: VanillaCNN\n"
        "loss:\n  loss_type: Focal\n")
    spec = tmp_path / "sub" / "s.yaml"
    spec.write_text("base: writeup.yaml\ngrid:\n  seed: [0, 1]\n")
    plan = expand(load_spec(spec))
    assert {(t.config.model.name, t.config.optim.lr, t.config.loss.name)
            for t in plan.trials} == {("vanillacnn", 0.01, "focal")}
    assert plan.spec.experiment == "s" and plan.spec.name == "s"


# ---- the CLI without training ---------------------------------------------------------------

def sweep_cli(*args: str):
    return CliRunner().invoke(app, ["sweep", *args])


def test_dry_run_json_is_exactly_the_plan(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps(FIXED))  # JSON is YAML
    result = sweep_cli(str(spec), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out == {"trials": [
        {"key": "0fe13898e1e3", "overrides": {"loss.beta": 0.0, "run.seed": 0}},
        {"key": "6216d879a595", "overrides": {"loss.beta": 0.0, "run.seed": 1}},
        {"key": "7e0de54d5717", "overrides": {"loss.beta": 0.99, "run.seed": 0}},
        {"key": "5d3e59440820", "overrides": {"loss.beta": 0.99, "run.seed": 1}}]}


def test_dry_run_table_shows_every_trial_and_its_key():
    result = sweep_cli(str(EXPERIMENTS / "ldam-drw.yaml"), "--dry-run")
    assert result.exit_code == 0, result.output
    plan = expand(load_spec(EXPERIMENTS / "ldam-drw.yaml"))
    assert all(t.key in result.stdout for t in plan.trials)
    assert "16 trials" in result.stdout and plan.key in result.stdout


def test_dry_run_table_fills_keys_a_trial_does_not_set_with_their_base_value(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("base: {model: {name: vanillacnn}}\ngrid: {seed: [0, 1]}\n"
                    "include:\n  - {optim.lr: 0.5, seed: 0}\n")
    result = CliRunner().invoke(app, ["sweep", str(spec), "--dry-run"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[3:5] for row in rows] == [
        [" 0        ", " 0.1      "], [" 1        ", " 0.1      "], [" 0        ", " 0.5      "]]
    spec.write_text("base: {model: {name: vanillacnn}}\ngrid: {seed: [0]}\n")
    one = CliRunner().invoke(app, ["sweep", str(spec), "--dry-run"], env={"COLUMNS": "300"})
    assert "s.yaml: 1 trial " in one.stdout


def test_dry_run_table_too_wide_for_the_terminal_lists_each_trials_own_values(tmp_path):
    """Past the terminal's width a column per key would squeeze every cell to "…"."""
    spec = tmp_path / "s.yaml"
    spec.write_text("base: {model: {name: vanillacnn}}\ngrid: {seed: [0, 1]}\n"
                    "include:\n  - {optim.lr: 0.5, optim.weight_decay: 0.001, loss.name: focal,"
                    " loss.gamma: 2.0, optim.steps: [40, 45], seed: 0}\n")
    narrow = CliRunner().invoke(app, ["sweep", str(spec), "--dry-run"], env={"COLUMNS": "80"})
    assert narrow.exit_code == 0, narrow.output
    text = " ".join(line.strip("│ ") for line in narrow.stdout.splitlines())
    assert "…" not in narrow.stdout and "values this trial sets" in narrow.stdout
    assert "run.seed=1" in text and "optim.steps=[40, 45]" in text and "loss.gamma=2.0" in text
    wide = CliRunner().invoke(app, ["sweep", str(spec), "--dry-run"], env={"COLUMNS": "250"})
    assert "values this trial sets" not in wide.stdout and "optim.weight_decay" in wide.stdout


@pytest.mark.parametrize("body, args, message", [
    ("grid:\n  optim.lrr: [0.1]\n", [], "s.yaml: grid: unknown config key 'optim.lrr' (did "
                                        "you mean 'optim.lr'"),
    ("include:\n  - {sed: 1}\n", [], "s.yaml: include[0]: unknown config key 'sed'"),
    ("grid:\n  seed: [0]\n", ["--resume"], "a sweep resumes when the same command runs again"),
    ("grid:\n  loss.beta: []\n", [], "grid axis loss.beta is empty"),
    ("grid:\n  loss.gamma: [-1]\n", [], "loss.gamma must be >= 0"),
    ("grid:\n  seed: [0\n", [], "invalid YAML"),
    ("grid:\n  seed: [0]\n", ["--json"], "--json goes with --dry-run"),
    ("grid:\n  seed: [0]\n", ["--workers", "0"], "--workers must be >= 1"),
    ("grid:\n  seed: [0]\n", ["--backend", "slurm"], "--backend must be one of local, ray"),
    ("grid:\n  seed: [0]\n", ["--address", "auto"], "go with --backend ray"),
    ("grid:\n  seed: [0]\n", ["--gpus-per-trial", "0.5"], "go with --backend ray"),
    ("grid:\n  seed: [0]\n", ["--set", "seed=3"], "the sweep varies run.seed"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, body, args, message):
    spec = tmp_path / "s.yaml"
    spec.write_text(body)
    result = sweep_cli(str(spec), *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert result.output.count("error:") == 1


def test_missing_spec_file_exits_2(tmp_path):
    result = sweep_cli(str(tmp_path / "nope.yaml"), "--dry-run")
    assert result.exit_code == 2 and "sweep spec not found" in result.output


def test_ray_backend_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    spec = tmp_path / "s.yaml"
    spec.write_text("grid:\n  seed: [0]\n")
    result = sweep_cli(str(spec), "--backend", "ray")
    assert result.exit_code == 2, result.output
    assert "pip install 'cifarctl[ray]'" in result.output
    assert not (tmp_path / "mlflow.db").exists()


def test_plain_progress_lines_name_a_run_only_when_the_trial_has_one(tmp_path):
    import io

    from cifarctl.sweep.live import PlainLines
    from cifarctl.sweep.state import TrialState

    plan = plan_of({"grid": {"seed": [0, 1]}}, tmp_path)
    out = io.StringIO()
    lines = PlainLines(2, stream=out)
    never = TrialState(plan.trials[0], status="not run", message="not started: the sweep stopped")
    failed = TrialState(plan.trials[1], status="failed", run_id="ab" * 16, message="NaN loss")
    lines.update(never)
    lines.update(failed)
    first, second = out.getvalue().splitlines()
    assert first.endswith("not run: not started: the sweep stopped") and "(run" not in first
    assert second.endswith(f"failed: NaN loss  (run {'ab' * 16})")


@pytest.mark.parametrize("width", [80, 200])
def test_closing_table_keeps_run_ids_whole(width):
    """`eval` needs a run id whole: at 80 columns the table drops the trial keys instead."""
    from rich.console import Console

    from cifarctl.sweep.live import summary_table
    from cifarctl.sweep.state import SweepOutcome, TrialState

    plan = expand(load_spec(EXPERIMENTS / "ldam-drw.yaml"))
    states = [TrialState(t, status="ok", run_id=f"{i:032x}", summary={"test_acc_at_best": 0.5})
              for i, t in enumerate(plan.trials[:3])]
    outcome = SweepOutcome(plan, "f" * 32, states)
    console = Console(width=width, record=True)
    console.print(summary_table(outcome, console.width))
    text = console.export_text()
    assert all(s.run_id in text for s in states) and "50.00%" in text
    assert (plan.trials[0].key in text) == (width >= 120)
    assert max(len(line) for line in text.splitlines()) <= width
