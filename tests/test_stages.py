"""Two-stage training (issue 18): frozen features stay bit-identical, MaxNorm caps the rows,
the second stage names its first, resumes exactly, and refuses a first stage it cannot use.

Stage 1 is a tiny run trained here: resnet20 (BatchNorm everywhere) without tracking for
the weight checks, vanillacnn tracked in a real MLflow store for the CLI.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from run_helpers import InterruptAt, write_synthetic
from typer.testing import CliRunner

from cifarctl.checkpoint import load_checkpoint
from cifarctl.cli import app
from cifarctl.config import load_config
from cifarctl.errors import UsageError
from cifarctl.names import INIT_FROM_TAG
from cifarctl.tracking import NullTracker
from cifarctl.training import load_resume, train
from cifarctl.training.stages import max_norm_threshold, project_rows

TINY = {"data.imbalance": 5, "optim.batch_size": 32, "optim.warmup": 0, "optim.steps": [5],
        "run.device": "cpu"}
CRT = {"optim.train": "classifier", "model.reinit_classifier": True,
       "data.sampler": "class-balanced", "optim.max_norm": 0.1, "optim.lr": 0.05}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory, "stages-synth", train_per_class=24,
                           test_per_class=5)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stages-cache")


@pytest.fixture(autouse=True)
def _cache(cache, monkeypatch):
    monkeypatch.setenv("CIFARCTL_DATA", str(cache))


def config(dataset: Path, **values):
    return load_config(None, {"model.name": "resnet20", "data.dataset": str(dataset),
                              "optim.epochs": 1, **TINY, **values})


@pytest.fixture(scope="module")
def stage1(dataset, cache, tmp_path_factory) -> tuple[str, Path]:
    """A finished untracked resnet20 run: (its local run id, the checkpoint folder)."""
    root = tmp_path_factory.mktemp("stage1")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIFARCTL_DATA", str(cache))
        outcome = train(config(dataset), tracker=NullTracker(), checkpoint_root=root)
    assert outcome.status == "FINISHED"
    return outcome.run_id, root


def stage2(dataset: Path, stage1_id: str, **values):
    return config(dataset, **{"run.init_from": stage1_id, **CRT, **values})


@pytest.fixture(scope="module")
def crt(dataset, stage1, cache):
    """cRT with MaxNorm on stage 1: one epoch of 3 steps, finished."""
    run_id, root = stage1
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIFARCTL_DATA", str(cache))
        outcome = train(stage2(dataset, run_id), tracker=NullTracker(), checkpoint_root=root)
    assert outcome.status == "FINISHED" and outcome.epochs_done == 1
    return outcome


def test_frozen_weights_and_batchnorm_statistics_stay_bit_identical(stage1, crt):
    run_id, root = stage1
    before = load_checkpoint(root / run_id / "best.pt")["model"]
    after = load_checkpoint(crt.checkpoint_dir / "last.pt")["model"]
    assert any(k.endswith("running_mean") for k in after)  # BatchNorm statistics, checked too
    for name, tensor in after.items():
        if name.startswith("classifier."):
            assert not torch.equal(tensor, before[name]), name  # re-initialised and trained
        else:
            assert torch.equal(tensor, before[name]), name


def test_max_norm_caps_every_class_row_at_the_papers_threshold(crt):
    """delta = min + 0.1 (max - min) of the row norms of the classifier as stage 2 starts
    (here: re-initialised, seeded as create_model does), Alshammari et al.'s rule."""
    from cifarctl.models import create_model

    torch.manual_seed(0)
    start = create_model("resnet20").classifier.weight.detach()
    norms = start.norm(dim=1)
    delta = norms.min() + 0.1 * (norms.max() - norms.min())
    final = load_checkpoint(crt.checkpoint_dir / "last.pt")["model"]["classifier.weight"]
    assert (final.norm(dim=1) <= delta * (1 + 1e-6)).all()
    assert torch.isclose(final.norm(dim=1).max(), delta, rtol=1e-5)  # the cap binds


def test_project_rows_is_the_spec_formula():
    weight = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    delta = max_norm_threshold(weight, 0.5)  # norms 5, 0.5, 0: 0 + 0.5 * 5
    assert delta.item() == pytest.approx(2.5)
    project_rows(weight, delta)  # w <- w min(1, delta / ||w||)
    torch.testing.assert_close(weight, torch.tensor([[1.5, 2.0], [0.3, 0.4], [0.0, 0.0]]))


def test_a_resumed_second_stage_ends_where_an_uninterrupted_one_ends(dataset, stage1, crt):
    run_id, root = stage1
    cfg = stage2(dataset, run_id)
    stopped = train(cfg, tracker=NullTracker(), reporter=InterruptAt(0, 2),
                    checkpoint_root=root)
    assert stopped.status == "KILLED"
    cfg2, state = load_resume(stopped.run_id, root)
    tracker = NullTracker()
    tracker.run_id = stopped.run_id
    resumed = train(cfg2, tracker=tracker, checkpoint_root=root, resume=state)
    a = load_checkpoint(crt.checkpoint_dir / "last.pt")["model"]
    b = load_checkpoint(resumed.checkpoint_dir / "last.pt")["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_classifier_of_another_kind_needs_a_fresh_one(dataset, stage1):
    from cifarctl.training.stages import prepare_init

    run_id, root = stage1
    cfg = stage2(dataset, run_id, **{"model.reinit_classifier": False,
                                     "model.classifier": "normed"})
    with pytest.raises(UsageError, match="needs --reinit-classifier"):
        prepare_init(cfg, checkpoint_root=root, tracking_uri=None, num_classes=10)
    other = stage2(dataset, run_id, **{"model.name": "resnet32"})
    with pytest.raises(UsageError, match="trained resnet20, this run is resnet32"):
        prepare_init(other, checkpoint_root=root, tracking_uri=None, num_classes=10)


# ---- the command line, tracked --------------------------------------------------------------

@pytest.fixture(scope="module")
def tracked(dataset, cache, tmp_path_factory, _mlflow_template_db) -> dict:
    """A tracked store with one FINISHED vanillacnn run (stage 1) and one KILLED run."""
    folder = tmp_path_factory.mktemp("stages-store")
    shutil.copyfile(_mlflow_template_db, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    args = ["train", "vanillacnn", "--dataset", str(dataset), "--epochs", "1", "--imbalance",
            "5", "--batch-size", "32", "--set", "optim.warmup=0", "--set", "optim.steps=[5]",
            "--experiment", "stages", "-q", "--tracking-uri", uri, "--checkpoints",
            str(folder / "checkpoints")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIFARCTL_DATA", str(cache))
        mp.chdir(folder)
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 0, done.output
        from cifarctl.tracking import open_tracker
        from cifarctl.tracking.runstore import open_store

        (run,) = open_store(uri).find_runs("stages")
        other = open_tracker(True, experiment="stages", tracking_uri=uri)
        other.finish("KILLED")  # a run that did not finish
    return {"uri": uri, "args": args, "folder": folder, "stage1": run.run_id,
            "killed": other.run_id}


def runs_in(uri: str) -> int:
    from cifarctl.tracking.runstore import open_store

    return len(open_store(uri).find_runs("stages"))


def test_the_second_stage_records_its_first_as_tag_and_param(tracked, monkeypatch):
    monkeypatch.chdir(tracked["folder"])
    result = CliRunner().invoke(app, [*tracked["args"], "--init-from", tracked["stage1"],
                                      "--train", "classifier", "--reinit-classifier",
                                      "--set", "data.sampler=class-balanced"])
    assert result.exit_code == 0, result.output
    from cifarctl.tracking.runstore import open_store

    runs = open_store(tracked["uri"]).find_runs("stages", f"tags.{INIT_FROM_TAG} = "
                                                          f"'{tracked['stage1']}'")
    assert len(runs) == 1
    run = runs[0]
    assert run.params["run.init_from"] == tracked["stage1"]
    assert run.params["optim.train"] == "classifier"
    assert run.run_name == "vanillacnn-ce-cbsample-clf-reinit-lt5-s0"


@pytest.mark.parametrize("which, message", [
    ("0123456789abcdef0123456789abcdef", "unknown --init-from run id"),
    ("killed", "that run is KILLED, not FINISHED"),
    ("local-0123456789ab", "no finished untracked run with that id"),
])
def test_init_from_a_run_it_cannot_use_is_one_line_and_no_run(tracked, monkeypatch, which,
                                                               message):
    monkeypatch.chdir(tracked["folder"])
    before = runs_in(tracked["uri"])
    run_id = tracked.get(which, which)
    result = CliRunner().invoke(app, [*tracked["args"], "--init-from", run_id, "--train",
                                      "classifier"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert runs_in(tracked["uri"]) == before


@pytest.mark.parametrize("extra, message", [
    (["--train", "classifier"], "optim.train=classifier trains the classifier of a finished run"),
    (["--reinit-classifier"], "model.reinit_classifier starts a new classifier"),
    (["--init-from", "X", "--fuse-seeds", "0,1"], "a two-stage run (run.init_from) cannot be "
                                                 "fused"),
    (["--set", "optim.max_norm=0.1", "--fuse", "2"], "a MaxNorm run (optim.max_norm) cannot "
                                                     "be fused"),
    (["--train", "last"], "optim.train must be all or classifier, got 'last'"),
])
def test_stage_flags_that_do_not_go_together_are_one_line(tracked, monkeypatch, extra, message):
    monkeypatch.chdir(tracked["folder"])
    result = CliRunner().invoke(app, [*tracked["args"], *extra])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output
