"""`cifarctl sweep --fuse K`: compatible trials train as one fused model (issue 8): new ones,
or resumed ones whose checkpoints stopped at one position."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifarctl.cli import app
from cifarctl.sweep.runner import fused_groups
from cifarctl.sweep.spec import expand, load_spec
from cifarctl.sweep.state import TrialState


def write_spec(folder: Path, dataset: str, mymodel: bool = True) -> Path:
    """Seeds 0-2 of vanillacnn CE, plus focal seed 0 at another batch size (not fusable with
    the others) and (`mymodel`) a mymodel trial (never fused)."""
    doc = {"base": {"model": {"name": "vanillacnn"},
                    "data": {"dataset": dataset, "val_per_class": 5, "imbalance": 2},
                    "optim": {"epochs": 2, "batch_size": 32, "warmup": 0, "steps": [],
                              "lr": 0.05},
                    "run": {"device": "cpu"}},
           "grid": {"seed": [0, 1, 2]},
           "include": [{"loss.name": "focal", "optim.batch_size": 16, "seed": 0}]
           + ([{"model.name": "mymodel", "seed": 5}] if mymodel else [])}
    path = folder / "fuse.yaml"
    path.write_text(json.dumps(doc))
    return path


def test_compatible_trials_are_packed_in_plan_order(tmp_path):
    plan = expand(load_spec(write_spec(tmp_path, "synthetic")))
    states = [TrialState(t) for t in plan.trials]
    names = {id(s): (s.trial.config.run.seed, s.trial.config.optim.batch_size,
                     s.trial.config.model.name) for s in states}

    def shape(groups):
        return [[names[id(s)] for s in g] for g in groups]

    assert shape(fused_groups(states, 2)) == [
        [(0, 32, "vanillacnn"), (1, 32, "vanillacnn")], [(2, 32, "vanillacnn")],
        [(0, 16, "vanillacnn")], [(5, 32, "mymodel")]]
    assert shape(fused_groups(states, 8))[0] == [(s, 32, "vanillacnn") for s in (0, 1, 2)]
    assert all(len(g) == 1 for g in fused_groups(states, 1))
    states[1].run_id = "r1"  # an earlier attempt's run: it continues there, alone
    resumed = fused_groups(states, 8)
    assert shape(resumed)[:2] == [[(0, 32, "vanillacnn"), (2, 32, "vanillacnn")],
                                  [(1, 32, "vanillacnn")]]
    # continuing trials fuse again with others whose checkpoints stopped at the same
    # (epoch, step) (an interrupted fused group), never with new trials
    for state, at in zip(states[:3], [(4, 0), (3, 7), (4, 0)]):
        state.run_id, state.resume_at = "r", at
    assert shape(fused_groups(states, 8)) == [
        [(0, 32, "vanillacnn"), (2, 32, "vanillacnn")], [(1, 32, "vanillacnn")],
        [(0, 16, "vanillacnn")], [(5, 32, "mymodel")]]
    assert all(len(g) == 1 for g in fused_groups(states, 1))


@pytest.mark.parametrize("args", [["--fuse", "0"], ["--fuse", "2", "--no-fuse"]])
def test_bad_fuse_options_exit_2(tmp_path, args):
    result = CliRunner().invoke(app, ["sweep", str(write_spec(tmp_path, "synthetic")), *args])
    assert result.exit_code == 2 and "--fuse takes a group size >= 1" in result.output


@pytest.mark.slow
def test_a_fused_sweep_gives_every_trial_its_own_finished_run(mlflow_store, data_home,
                                                             tmp_path):
    """A real sweep: the three seeds train as one fused group in one worker process (one
    fused_group tag), the other trial alone; every child FINISHED with train's metrics."""
    from cifarctl.data.synth import SynthSpec, write_batches
    from cifarctl.tracking.runstore import open_store

    data = tmp_path / "data"
    write_batches(data, SynthSpec(train_per_class=30, test_per_class=5, seed=2))
    spec = write_spec(tmp_path, str(data), mymodel=False)  # unfusable models: packing test
    result = CliRunner().invoke(app, ["sweep", str(spec), "--fuse", "4", "--workers", "2",
                                      "-q", "--experiment", "fused-sweep"])
    assert result.exit_code == 0, result.output
    runs = open_store().find_runs("fused-sweep")
    children = [r for r in runs if "mlflow.parentRunId" in r.tags]
    assert len(children) == 4 and all(r.status == "FINISHED" for r in children)
    for run in children:
        for metric in ("train_loss", "val_acc", "test_acc", "test_acc_at_best", "lr",
                       "images_per_s", "test_acc_class_9"):
            assert metric in run.metrics, (run.run_name, metric)
    groups = {r.tags.get("fused_group") for r in children
              if r.params["optim.batch_size"] == "32" and r.params["model.name"] == "vanillacnn"}
    assert len(groups) == 1 and None not in groups
    (alone,) = [r for r in children if r.params["optim.batch_size"] == "16"]
    assert "fused_group" not in alone.tags


@pytest.mark.parametrize("device, cuda, free_gib, sharing, expected", [
    ("cpu", True, 80, 1, 1),       # fusing gains nothing on the CPU
    ("auto", False, 80, 1, 1),     # no GPU: the CPU
    ("auto", True, 80, 1, 16),     # a free H100 holds more than the cap
    ("cuda", True, 12, 2, 4),      # 12 GiB shared by 2 workers: 6 GiB / 1.5 GiB
    ("cuda:1", True, 1, 1, 1),     # never below one member
])
def test_default_fuse_follows_free_gpu_memory(monkeypatch, device, cuda, free_gib, sharing,
                                              expected):
    """`sweep`'s default --fuse K from the free memory of the device (issue 8)."""
    import torch

    from cifarctl.fused.capacity import default_fuse

    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "mem_get_info",
                        lambda index: asked.append(index) or (free_gib * 2**30, 80 * 2**30))
    assert default_fuse(device, sharing=sharing) == expected
    assert asked == ([] if device == "cpu" or not cuda else [1 if device == "cuda:1" else 0])
