"""Sweeps in stages (issue 18): a trial that starts from another trial's finished run.

The spec names the stage-1 trial by its values; the plan refers to it by trial key; the
scheduler waits for it; the worker trains the second stage from its run. The tiny sweep at
the end runs in this process (an executor that runs each group when polled) so that it
takes seconds, not the time of worker processes starting and importing torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from run_helpers import write_synthetic

from cifarctl.config import load_config
from cifarctl.errors import UsageError
from cifarctl.names import INIT_FROM_TAG, TRIAL_KEY_TAG
from cifarctl.sweep.spec import expand, load_spec, trial_key
from cifarctl.sweep.stages import as_planned, take_ready

CRT = {"optim.train": "classifier", "model.reinit_classifier": True,
       "data.sampler": "class-balanced", "run.init_from": {"loss.name": "ce"}}


def write_spec(folder: Path, include: list, *, dataset: str = "synthetic", grid=None,
               extra: dict | None = None) -> Path:
    doc = {"base": {"model": {"name": "vanillacnn"},
                    "data": {"dataset": dataset, "imbalance": 5},
                    "optim": {"epochs": 1, "batch_size": 32, "warmup": 0, "steps": [],
                              "lr": 0.05},
                    "run": {"device": "cpu"}},
           "grid": grid if grid is not None else {"seed": [0, 1]}, "include": include,
           **(extra or {})}
    path = folder / "staged.yaml"
    path.write_text(json.dumps(doc))
    return path


def test_a_stage_2_trial_refers_to_the_stage_1_trial_of_its_own_seed(tmp_path):
    plan = expand(load_spec(write_spec(tmp_path, [CRT, {"loss.name": "ce"},
                                                  {"loss.name": "la"}])))
    by_values = {(t.config.optim.train, t.config.loss.name, t.config.run.seed): t
                 for t in plan.trials}
    for seed in (0, 1):
        crt, ce = by_values["classifier", "ce", seed], by_values["all", "ce", seed]
        assert crt.config.run.init_from == f"trial:{ce.key}"
        assert crt.overrides["run.init_from"] == {"loss.name": "ce"}  # shown as written
        assert ce.config.run.init_from is None
    assert len(plan.trials) == 6
    again = expand(load_spec(write_spec(tmp_path, [CRT, {"loss.name": "ce"},
                                                   {"loss.name": "la"}])))
    assert [t.key for t in again.trials] == [t.key for t in plan.trials]  # store-free keys


@pytest.mark.parametrize("include, message", [
    ([{**CRT, "run.init_from": {"loss.name": "focal"}}],
     "run.init_from matches no trial of the spec (with the same run.seed)"),
    ([CRT, {"loss.name": "ce", "optim.lr": 0.1}, {"loss.name": "ce", "optim.lr": 0.2}],
     "run.init_from matches 3 trials of the spec"),  # the grid's own CE trial too
    ([{**CRT, "run.init_from": {}}, {"loss.name": "ce"}], "got an empty mapping"),
    ([{**CRT, "run.init_from": {"loss.nam": "ce"}}, {"loss.name": "ce"}],
     "did you mean 'loss.name'"),
])
def test_a_reference_that_names_no_single_trial_is_one_line(tmp_path, include, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        expand(load_spec(write_spec(tmp_path, include)))


def test_a_random_subset_must_keep_the_stage_1_trial(tmp_path):
    spec = write_spec(tmp_path, [CRT, {"loss.name": "ce"}], grid={"seed": [0]},
                      extra={"random": {"n": 1, "seed": 0}})
    with pytest.raises(UsageError, match="random leaves out trial"):
        for seed in range(20):  # whichever trial a seed keeps, keeping only cRT is refused
            doc = json.loads(spec.read_text())
            doc["random"]["seed"] = seed
            spec.write_text(json.dumps(doc))
            expand(load_spec(spec))


def state(key: str, status: str, init_from: str | None = None) -> SimpleNamespace:
    cfg = SimpleNamespace(run=SimpleNamespace(init_from=init_from))
    return SimpleNamespace(trial=SimpleNamespace(key=key, config=cfg), status=status)


def test_the_scheduler_starts_a_second_stage_only_after_its_first_finished():
    first, second = state("a", "queued"), state("b", "queued", "trial:a")
    by_key = {"a": first, "b": second}
    pending = [[second], [first]]
    assert take_ready(pending, by_key) == ([first], [])  # b waits, a goes
    assert take_ready(pending, by_key) == (None, [])  # a runs: b still waits
    first.status = "ok"
    assert take_ready(pending, by_key) == ([second], []) and pending == []
    failed, blocked = state("c", "failed"), state("d", "queued", "trial:c")
    pending = [[blocked]]
    assert take_ready(pending, {"c": failed, "d": blocked}) == (None, [blocked])
    assert pending == []


def test_a_resumed_second_stage_keeps_its_planned_trial_key():
    planned = load_config(None, {"model.name": "vanillacnn", "optim.train": "classifier",
                                 "run.init_from": "trial:0123456789ab"})
    saved = load_config(None, {"model.name": "vanillacnn", "optim.train": "classifier",
                               "run.init_from": "f" * 32})
    assert trial_key(saved) != trial_key(planned)
    assert trial_key(as_planned(saved, planned)) == trial_key(planned)


# ---- a tiny sweep, trained ------------------------------------------------------------------

class InProcess:
    """An executor that runs each submitted group in this process when polled."""

    def __init__(self, workers: int, gpus: list[str]) -> None:
        self.queue: list = []

    def free(self) -> int:
        return 1 - len(self.queue)

    def busy(self) -> int:
        return len(self.queue)

    def submit(self, tasks) -> None:
        self.queue.append(tasks)

    def poll(self, timeout: float):
        from cifarctl.sweep.worker import run_group

        events: list = []
        sink = SimpleNamespace(put=events.append)
        while self.queue:
            run_group(self.queue.pop(0), sink)
        return events

    def stop(self) -> None: ...
    def kill(self) -> None: ...
    def close(self) -> None: ...


def test_a_tiny_sweep_trains_crt_on_its_ce_run(mlflow_store, data_home, tmp_path,
                                                      tmp_path_factory, monkeypatch):
    import cifarctl.sweep.runner as runner
    from cifarctl.tracking.runstore import open_store

    monkeypatch.setattr(runner, "LocalExecutor", InProcess)
    dataset = write_synthetic(tmp_path_factory, "staged-synth", train_per_class=20,
                              test_per_class=4)
    spec = write_spec(tmp_path, [{**CRT, "seed": 1}, {"loss.name": "ce", "seed": 1}],
                      dataset=str(dataset), grid={})
    plan = expand(load_spec(spec))
    assert plan.trials[0].config.run.init_from is not None  # planned first, trained second
    outcome = runner.run_sweep(plan, workers=1, checkpoint_root=tmp_path / "checkpoints")
    assert outcome.counts["ok"] == 2, [(t.trial.key, t.status, t.message)
                                       for t in outcome.trials]
    runs = {r.tags[TRIAL_KEY_TAG]: r for r in open_store().find_runs("staged")
            if TRIAL_KEY_TAG in r.tags}
    for trial in plan.trials:
        stage1 = trial.config.run.init_from
        if stage1 is None:
            continue
        first = runs[stage1.removeprefix("trial:")]
        second = runs[trial.key]
        assert second.tags[INIT_FROM_TAG] == first.run_id
        assert second.params["run.init_from"] == first.run_id
        assert second.params["optim.train"] == "classifier"
    again = runner.run_sweep(plan, workers=1, checkpoint_root=tmp_path / "checkpoints")
    assert again.counts["skipped"] == 2


# ---- the shipped specs ----------------------------------------------------------------------

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.parametrize("name, trials, crt, losses", [
    ("modern-lt", 54, 6, {"ce", "focal", "ldam", "la", "balanced-softmax", "vs"}),
    ("modern-lt-short", 5, 1, {"ce", "la", "balanced-softmax", "vs"}),
])
def test_the_modern_lt_specs_plan_crt_on_their_ce_runs(name, trials, crt, losses):
    plan = expand(load_spec(EXPERIMENTS / f"{name}.yaml"))
    assert len(plan.trials) == trials
    assert {t.config.loss.name for t in plan.trials} == losses
    by_key = {t.key: t for t in plan.trials}
    stage2 = [t for t in plan.trials if t.config.run.init_from]
    assert len(stage2) == crt  # one per CE run (imbalance x seed)
    for trial in stage2:
        first = by_key[trial.config.run.init_from.removeprefix("trial:")]
        assert first.config.loss.name == "ce" and first.config.optim.train == "all"
        assert first.config.run.seed == trial.config.run.seed
        assert first.config.data.imbalance == trial.config.data.imbalance
        assert trial.config.data.sampler == "class-balanced" and trial.config.optim.epochs == 10
        assert first.config.optim.sam_rho == 0.0  # cRT sits on the 200-epoch CE run
    vs = next(t for t in plan.trials if t.config.loss.name == "vs")
    assert (vs.config.loss.gamma, vs.config.loss.tau) == (0.3, 1.0)


def test_the_recipe_axis_of_modern_lt_matches_the_published_recipe_rows():
    """Issue 19: modern-lt.yaml's recipe trials are the settings of Wang et al.'s rows, so the
    report puts each group beside its number (and nothing else of the spec is compared)."""
    from cifarctl.report.literature import recipe_published

    plan = expand(load_spec(EXPERIMENTS / "modern-lt.yaml"))
    recipe = [t for t in plan.trials if t.config.optim.sam_rho > 0]
    assert len(recipe) == 12  # CE and LDAM-DRW x LT-100 and LT-10 x 3 seeds
    groups: dict = {}
    for t in recipe:
        groups.setdefault((t.config.loss.name, t.config.data.imbalance), []).append(
            {k: str(v) for k, v in t.config.to_flat().items()})
    found = {key: [p.method for p in recipe_published(runs)] for key, runs in groups.items()}
    assert found == {
        ("ce", 100.0): ["CE, 400 epochs, SAM ρ=0.1, wd 1e-4, AutoAug + Cutout"],
        ("ce", 10.0): ["CE, 400 epochs, SAM ρ=0.1, wd 1e-4, AutoAug + Cutout"],
        ("ldam", 100.0): ["LDAM-DRW, 400 epochs, SAM ρ=0.4, wd 5e-5, AutoAug + Cutout"],
        ("ldam", 10.0): ["LDAM-DRW, 400 epochs, SAM ρ=0.4, wd 1e-5, AutoAug + Cutout"]}
    plain = [{k: str(v) for k, v in t.config.to_flat().items()}
             for t in plan.trials if t.config.optim.sam_rho == 0]
    assert all(recipe_published([run]) == [] for run in plain)


@pytest.mark.slow  # five resnet20 trials, one epoch each
def test_the_short_study_runs_one_epoch_on_a_tiny_set(mlflow_store, data_home, tmp_path,
                                                      tmp_path_factory, monkeypatch):
    """experiments/modern-lt-short.yaml as shipped, at one epoch on a tiny synthetic set."""
    import yaml

    import cifarctl.sweep.runner as runner

    monkeypatch.setattr(runner, "LocalExecutor", InProcess)
    dataset = write_synthetic(tmp_path_factory, "short-synth", train_per_class=100,
                              test_per_class=4)  # LT-100 keeps 100, 59, ..., 1
    doc = yaml.safe_load((EXPERIMENTS / "modern-lt-short.yaml").read_text())
    doc["base"]["optim"]["epochs"] = 1
    doc["base"]["data"]["dataset"] = str(dataset)
    for entry in doc["include"]:
        entry.update({"optim.epochs": 1} if "optim.epochs" in entry else {})
    spec = tmp_path / "modern-lt-short.yaml"
    spec.write_text(yaml.safe_dump(doc))
    outcome = runner.run_sweep(expand(load_spec(spec)), workers=1,
                               checkpoint_root=tmp_path / "checkpoints")
    assert outcome.counts["ok"] == 5, [(t.trial.key, t.status, t.message)
                                       for t in outcome.trials]
