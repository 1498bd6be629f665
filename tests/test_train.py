"""`cifarctl train` end to end on a tiny synthetic set, with a real MLflow store (issue 4).

Everything here trains `vanillacnn` (59k parameters) on 60 images per class for a few
epochs: seconds on two CPU cores, yet every path of a real run is taken.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from run_helpers import InterruptAt, InterruptTwiceAt, write_synthetic
from typer.testing import CliRunner

from cifarctl.checkpoint import load_checkpoint
from cifarctl.cli import app
from cifarctl.config import load_config
from cifarctl.names import default_run_name
from cifarctl.tracking import NullTracker
from cifarctl.training import load_resume, train

TINY = ["--epochs", "3", "--batch-size", "32", "--set", "optim.warmup=1",
        "--set", "optim.steps=[2]", "--set", "data.val_per_class=10", "--quiet"]
PER_CLASS = [f"test_acc_class_{i}" for i in range(10)]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 training + 20 test images per class, as CIFAR python batches (imported per test)."""
    return write_synthetic(tmp_path_factory, "tiny-synth", train_per_class=60,
                           test_per_class=20)


def tiny_config(dataset: Path, **overrides):
    base = {"model.name": "vanillacnn", "data.dataset": str(dataset), "optim.epochs": 3,
            "optim.batch_size": 32, "optim.warmup": 1, "optim.steps": [2],
            "data.val_per_class": 10, "run.device": "cpu"}
    return load_config(None, {**base, **overrides})


def run_cli(*args: str):
    return CliRunner().invoke(app, ["train", *args])


def test_cli_run_is_tracked_in_mlflow(mlflow_store, data_home, tiny_dataset):
    import mlflow
    from mlflow.tracking import MlflowClient

    result = run_cli("vanillacnn", "--dataset", str(tiny_dataset), "--loss", "focal",
                     "--beta", "0.9", "--imbalance", "5", "--experiment", "tiny", *TINY)
    assert result.exit_code == 0, result.output
    runs = mlflow.search_runs(experiment_names=["tiny"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    assert run["tags.mlflow.runName"] == "vanillacnn-focal-b0.9-lt5-s0"
    assert run["params.loss.name"] == "focal" and run["params.loss.beta"] == "0.9"
    assert run["params.data.imbalance"] == "5.0"
    for metric in ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                   "lr", "epoch_time_s", "images_per_s", "dead_relu_relu", "best_val_acc",
                   "test_acc_at_best", *PER_CLASS, "val_acc_class_9"]:
        assert f"metrics.{metric}" in run.index and run[f"metrics.{metric}"] == \
            run[f"metrics.{metric}"], metric  # present and not NaN
    counts = [int(c) for c in run["tags.class_counts"].split(",")]
    assert counts[0] == 50 and counts[-1] == 10  # 60 - 10 validation, then LT-5 exp
    # what reproducing it takes beyond the config: where the data came from, the CPU
    # threads its numbers depend on, and whether the checkout had edits past its commit
    assert json.loads(run["tags.dataset_source"]) == {"path": str(tiny_dataset.resolve())}
    assert run["tags.torch_threads"] == str(torch.get_num_threads())
    if isinstance(run.get("tags.git_commit"), str):
        assert run["tags.git_dirty"] in ("true", "false")

    client = MlflowClient()
    run_id = run["run_id"]
    history = client.get_metric_history(run_id, "test_acc")
    assert [m.step for m in history] == [0, 1, 2]
    best = int(run["metrics.best_epoch"])  # a step; the summary table counts from 1
    assert f"{best + 1} (metric best_epoch = {best}, its 0-based step)" in result.output
    lrs = [m.value for m in client.get_metric_history(run_id, "lr")]
    assert lrs[1] == pytest.approx(0.1) and lrs[2] == pytest.approx(0.01)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "training_curves.png", "per_class_accuracy.csv",
            "per_class_accuracy.png", "confusion_matrix.png", "checkpoints"} <= artifacts
    assert {a.path for a in client.list_artifacts(run_id, "checkpoints")} == {
        "checkpoints/best.pt", "checkpoints/last.pt"}
    inputs = client.get_run(run_id).inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name == run["tags.dataset"]
    csv = Path(client.download_artifacts(run_id, "per_class_accuracy.csv")).read_text()
    assert csv.splitlines()[0] == "class,name,train_count,test_acc" and len(csv.splitlines()) == 11
    state = load_checkpoint(Path("checkpoints") / run_id / "best.pt")
    assert state["config"]["loss"]["beta"] == 0.9
    # a finished run has nothing to resume: refused, and it stays FINISHED
    again = run_cli("--resume", run_id)
    assert again.exit_code == 2 and "nothing to resume" in again.stderr, again.output
    assert client.get_run(run_id).info.status == "FINISHED"


def test_assignment_yaml_runs(mlflow_store, data_home, tiny_dataset, tmp_path):
    cfg = tmp_path / "assignment.yaml"
    cfg.write_text("Train:\n  batch_size: 32\n  learning_rate: 0.05\n  epochs: 1\n"
                   "  steps: [5, 6]\n  warmup: 0\n  momentum: 0.9\n"
                   "network:\n  model: VanillaCNN\ndata:\n  save_best: True\n"
                   "loss:\n  loss_type: CE\n")
    result = run_cli("--config", str(cfg), "--dataset", str(tiny_dataset), "--no-track", "-q")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("args, message", [
    (["resnet33"], "unknown model 'resnet33'"),
    (["vanillacnn", "--lr", "-1"], "optim.lr must be > 0"),
    (["vanillacnn", "--beta", "1"], "loss.beta must be in [0, 1)"),
    (["vanillacnn", "--set", "optim.lrr=0.1"], "did you mean 'optim.lr'"),
    (["vanillacnn", "--set", "optim.steps=[40, 30]"], "strictly increasing"),
    (["vanillacnn", "--loss", "hinge"], "unknown loss 'hinge'"),
    (["vanillacnn", "--config", "missing.yaml"], "config file not found"),
    (["--config", str(Path(__file__).parents[1] / "experiments" / "demo-sweep.yaml")],
     "demo-sweep.yaml is a sweep spec (it has grid, base, include), not a run config: run it with "
     "`cifarctl sweep "),
    (["--resume", "abc", "--lr", "0.1"], "--resume continues the run with its own config"),
])
def test_bad_input_exits_2_with_one_line(mlflow_store, args, message):
    result = run_cli(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_missing_dataset_exits_2(mlflow_store, data_home, tmp_path):
    result = run_cli("vanillacnn", "--dataset", str(tmp_path / "nope"), "-q")
    assert result.exit_code == 2 and "error:" in result.output


def test_unreachable_tracking_server_fails_fast(data_home, tiny_dataset):
    t0 = time.perf_counter()
    result = run_cli("vanillacnn", "--dataset", str(tiny_dataset), "--tracking-uri",
                     "http://127.0.0.1:9", "-q")
    assert result.exit_code == 2 and "cannot reach MLflow tracking server" in result.output
    assert time.perf_counter() - t0 < 10


def test_resume_after_interruption_matches_uninterrupted(data_home, tiny_dataset, tmp_path):
    """Interrupt mid-epoch with a real SIGINT, resume, end bit-identical to a straight run."""
    cfg = tiny_config(tiny_dataset, **{"loss.name": "ldam", "loss.beta": 0.99,
                                       "loss.drw_epoch": 1, "model.name": "mymodel",
                                       "optim.epochs": 2, "optim.lr": 0.01})
    straight = train(cfg, tracker=NullTracker(), checkpoint_root=tmp_path / "a")

    stopped = train(cfg, tracker=NullTracker(), reporter=InterruptAt(1, 3),
                    checkpoint_root=tmp_path / "b")
    assert stopped.status == "KILLED" and stopped.epochs_done == 1
    cfg2, state = load_resume(stopped.run_id, tmp_path / "b")
    assert cfg2 == cfg and state.steps_done == 3
    tracker = NullTracker()
    tracker.run_id = stopped.run_id
    resumed = train(cfg2, tracker=tracker, checkpoint_root=tmp_path / "b", resume=state)
    assert resumed.status == "FINISHED" and resumed.epochs_done == 2
    for a, b in zip(straight.history, resumed.history):
        for key in ("train_loss", "train_acc", "val_loss", "test_acc", *PER_CLASS):
            assert a[key] == pytest.approx(b[key], abs=1e-6, rel=1e-6), key
    wa = load_checkpoint(straight.checkpoint_dir / "last.pt")["model"]
    wb = load_checkpoint(resumed.checkpoint_dir / "last.pt")["model"]
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-6, atol=1e-6)


def test_a_signal_while_the_data_loads_ends_killed_and_resumable(
        mlflow_store, data_home, tiny_dataset, monkeypatch):
    """SIGTERM before the first step (here: while the dataset is prepared, after the MLflow
    run exists) is not lost: the run ends KILLED with a step-0 checkpoint, and resumes."""
    from mlflow.tracking import MlflowClient

    import cifarctl.training.loop as loop
    from cifarctl.tracking import open_tracker

    real_prepare = loop.prepare_data

    def prepare_with_sigterm(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, handled before it returns
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(loop, "prepare_data", prepare_with_sigterm)
    cfg = tiny_config(tiny_dataset, **{"optim.epochs": 1})
    tracker = open_tracker(True, experiment="early")
    outcome = train(cfg, tracker=tracker)
    assert outcome.status == "KILLED" and outcome.epochs_done == 0
    assert "interrupted by SIGTERM in epoch 1" in outcome.message
    assert MlflowClient().get_run(outcome.run_id).info.status == "KILLED"
    monkeypatch.setattr(loop, "prepare_data", real_prepare)
    cfg2, state = load_resume(outcome.run_id, Path("checkpoints"))
    assert state.epoch == 0 and state.steps_done == 0 and state.sums is not None
    resumed = train(cfg2, tracker=open_tracker(True, experiment="", run_id=outcome.run_id),
                    resume=state)
    assert resumed.status == "FINISHED" and resumed.epochs_done == 1


def test_nonfinite_loss_fails_the_run_and_keeps_last_good_checkpoint(
        mlflow_store, data_home, tiny_dataset, monkeypatch):
    from mlflow.tracking import MlflowClient

    import cifarctl.losses

    real_build = cifarctl.losses.loss_from_config

    def nan_from_epoch_1(*args, **kwargs):
        loss = real_build(*args, **kwargs)
        forward, epoch = loss.forward, {"now": 0}
        loss.set_epoch = lambda e: epoch.update(now=e)
        loss.forward = lambda logits, y: forward(logits, y) * (float("nan") if epoch["now"]
                                                               else 1.0)
        return loss

    monkeypatch.setattr(cifarctl.losses, "loss_from_config", nan_from_epoch_1)
    result = run_cli("vanillacnn", "--dataset", str(tiny_dataset), "--experiment", "nan", *TINY)
    assert result.exit_code == 1
    assert "training loss became NaN/inf in epoch 2" in result.output
    run = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("nan").experiment_id])[0]
    assert run.info.status == "FAILED"
    state = load_checkpoint(Path("checkpoints") / run.info.run_id / "last.pt")
    assert state["epoch"] == 1 and len(state["history"]) == 1


def test_weights_that_diverge_under_a_finite_loss_fail_the_run_at_that_epoch(
        mlflow_store, data_home, tiny_dataset, monkeypatch):
    """A huge learning rate can leave NaN weights after a step whose loss was still finite:
    that epoch's evaluation is NaN, and its checkpoint must not be kept as the good one."""
    import torch
    from mlflow.tracking import MlflowClient

    import cifarctl.training.group as group_module

    real_steps, calls = group_module.train_steps, {"n": 0}

    def nan_weights_after_epoch_2(model, *args, **kwargs):
        real_steps(model, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:  # the loss of every step was finite; the weights are not
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float("nan"))

    monkeypatch.setattr(group_module, "train_steps", nan_weights_after_epoch_2)
    result = run_cli("vanillacnn", "--dataset", str(tiny_dataset), "--experiment", "nan", *TINY)
    assert result.exit_code == 1
    assert ("error: evaluation loss (the weights) became NaN/inf in epoch 2; the last good "
            "checkpoint (after epoch 1) is kept") in result.output
    run = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("nan").experiment_id])[0]
    assert run.info.status == "FAILED"
    for which in ("last", "best"):
        state = load_checkpoint(Path("checkpoints") / run.info.run_id / f"{which}.pt")
        assert state["epoch"] == 1 and len(state["history"]) == 1, which
        assert all(torch.isfinite(v).all() for v in state["model"].values()
                   if v.is_floating_point())
    from cifarctl.training import NonFiniteLoss

    assert str(NonFiniteLoss(0, in_evaluation=True)).startswith(
        "evaluation loss (the weights) became NaN/inf in epoch 1; no epoch came before it, so "
        "there is no checkpoint to keep")
    assert "in epoch 1; no epoch finished, so there is no checkpoint" in str(NonFiniteLoss(0))


@pytest.mark.slow
def test_sigterm_marks_killed_and_resume_finishes(mlflow_store, data_home, tiny_dataset):
    """A real subprocess, a real SIGTERM, then `--resume` in the same MLflow run."""
    from mlflow.tracking import MlflowClient

    cmd = [sys.executable, "-m", "cifarctl", "train", "vanillacnn", "--dataset",
           str(tiny_dataset), "--experiment", "sig", *TINY[:-1], "--epochs", "8"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)
    for line in proc.stderr:  # plain per-epoch lines: stderr is not a terminal
        if line.startswith("epoch 2/8"):
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted by SIGTERM" in err and "--resume" in err
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("sig").experiment_id])
    assert run.info.status == "KILLED"
    state = load_checkpoint(Path("checkpoints") / run.info.run_id / "last.pt")
    assert state["epoch"] >= 2
    done = subprocess.run([sys.executable, "-m", "cifarctl", "train", "--resume",
                           run.info.run_id, "-q"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    (run,) = client.search_runs([client.get_experiment_by_name("sig").experiment_id])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(set(steps)) == list(range(8))


REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.mark.slow
@pytest.mark.xdist_group("real-cifar10")  # one worker decodes the JPEGs once (conftest)
@pytest.mark.skipif(not REAL.is_file(), reason=f"real CIFAR-10 JPEG tarball not at {REAL}")
def test_real_cifar10_one_epoch_above_chance(real_data_home, tmp_path):
    cfg = load_config(None, {"model.name": "vanillacnn", "data.dataset": str(REAL),
                             "optim.epochs": 1, "optim.lr": 0.02, "optim.warmup": 0,
                             "optim.steps": [], "data.val_per_class": 0, "run.device": "cpu"})
    outcome = train(cfg, tracker=NullTracker(), checkpoint_root=tmp_path / "ckpt")
    assert outcome.history[0]["test_acc"] >= 0.35, outcome.history[0]["test_acc"]


@pytest.mark.parametrize("loss, head, name", [
    ("ldam", "auto", "resnet32-ldam-s0"), ("ldam", "normed", "resnet32-ldam-s0"),
    ("ldam", "linear", "resnet32-linear-ldam-s0"), ("ce", "normed", "resnet32-normed-ce-s0"),
    ("ce", "linear", "resnet32-ce-s0"),
])
def test_run_names_show_the_classifier_head_only_when_unusual_for_the_loss(loss, head, name):
    cfg = load_config(None, {"loss.name": loss, "model.classifier": head})
    assert default_run_name(cfg) == name


class _Compiled(torch.nn.Module):
    """What torch.compile returns, without the minute of compiling: another module that
    runs the model, so `train` takes the compiled path (the issue-8 message) cheaply."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def test_every_epoch_line_says_images_per_s_and_a_compiled_run_its_compile_time(
        data_home, tiny_dataset, tmp_path, monkeypatch):
    """Issue 8, "Also": images/s each epoch, and the compile time once when compiling."""
    import io
    import re

    from cifarctl.progress import LineReporter

    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: _Compiled(model))
    lines = {}
    for compiled in (False, True):
        stream = io.StringIO()
        cfg = tiny_config(tiny_dataset, **{"optim.epochs": 2, "run.compile": compiled})
        outcome = train(cfg, tracker=NullTracker(), reporter=LineReporter(stream),
                        checkpoint_root=tmp_path / str(compiled))
        assert outcome.status == "FINISHED"
        lines[compiled] = stream.getvalue().splitlines()
    for compiled, out in lines.items():
        epochs = [line for line in out if line.startswith("epoch ")]
        assert len(epochs) == 2 and all(re.search(r"  \d+ img/s  ", e) for e in epochs)
        compile_lines = [line for line in out if line.startswith("torch.compile")]
        assert len(compile_lines) == compiled  # once, and only when compiling
    assert re.fullmatch(r"torch\.compile: first step took \d+\.\ds \(compilation\)",
                        compile_lines[0])


def _runs_in_store() -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.parametrize("args, message", [
    (["--device", "cuda"], "no CUDA device is available"),
    (["--dataset", "nope"], "nope does not exist"),
    (["--imbalance", "1e9"], "leaves class 2 without training images"),
    (["--batch-size", "100000"], "optim.batch_size=100000 is larger than the"),
    (["--set", "data.val_per_class=100000"], "val_per_class must be >= 0"),
    (["--fuse", "2", "--device", "cuda"], "no CUDA device is available"),
    (["--fuse", "2", "--imbalance", "1e9"], "leaves class 2 without training images"),
])
def test_a_run_that_cannot_train_here_leaves_no_mlflow_run(
        mlflow_store, data_home, tiny_dataset, monkeypatch, args, message):
    """Device and data are checked before the run is created: no run left RUNNING forever,
    no empty FAILED runs in the user's store, one line and exit 2."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this machine
    result = run_cli("vanillacnn", "--dataset", str(tiny_dataset), *TINY, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1, result.output
    assert _runs_in_store() == []


def test_resuming_a_finished_run_is_refused_and_leaves_it_finished(
        mlflow_store, data_home, tiny_dataset):
    """Even with a stale local checkpoint from mid-run (which would retrain and log every
    metric twice), MLflow's FINISHED is the word."""
    import shutil

    result = run_cli("vanillacnn", "--dataset", str(tiny_dataset), *TINY[:1], "2", *TINY[2:])
    assert result.exit_code == 0, result.output
    (run,) = _runs_in_store()
    folder = Path("checkpoints") / run.info.run_id
    shutil.copyfile(folder / "best.pt", folder / "last.pt")  # epoch 1 of 2, say
    state = load_checkpoint(folder / "last.pt")
    state["epoch"] = 1
    torch.save(state, folder / "last.pt")
    again = run_cli("--resume", run.info.run_id, "-q")
    assert again.exit_code == 2, again.output
    assert f"run {run.info.run_id} is FINISHED: nothing to resume" in again.output
    (after,) = _runs_in_store()
    assert after.info.status == "FINISHED"
    from mlflow.tracking import MlflowClient

    steps = [m.step for m in MlflowClient().get_metric_history(run.info.run_id, "train_loss")]
    assert steps == [0, 1]


def test_resuming_on_regenerated_data_is_refused(data_home, tmp_path):
    """The checkpoint remembers the data's fingerprint: a run never mixes two datasets."""
    from cifarctl.data.synth import SynthSpec, write_batches
    from cifarctl.errors import UsageError
    from cifarctl.training import launch

    dataset = tmp_path / "ds"
    write_batches(dataset, SynthSpec(train_per_class=40, test_per_class=10, seed=0))
    cfg = tiny_config(dataset, **{"optim.epochs": 1})
    stopped = launch(cfg, track=False, checkpoint_root=tmp_path / "ck",
                     reporter=InterruptAt(0, 2))
    assert stopped.status == "KILLED"
    write_batches(dataset, SynthSpec(train_per_class=40, test_per_class=10, seed=1))
    with pytest.raises(UsageError, match="regenerated or re-imported"):
        launch(None, resume_run_id=stopped.run_id, track=False,
               checkpoint_root=tmp_path / "ck", quiet=True)
    state = load_checkpoint(tmp_path / "ck" / stopped.run_id / "last.pt")
    assert state["sums"]["steps_done"] == 2  # the checkpoint is untouched, still resumable


def test_the_resume_advice_names_the_store_and_folder_the_run_used(data_home, tiny_dataset,
                                                                   tmp_path):
    from cifarctl.training import launch, resume_cli_flags

    assert resume_cli_flags(track=True, tracking_uri=None,
                            checkpoint_root=Path("checkpoints")) == ""
    assert resume_cli_flags(track=True, tracking_uri="sqlite:///my runs.db",
                            checkpoint_root=Path("/x/ck")) == \
        "--tracking-uri 'sqlite:///my runs.db' --checkpoints /x/ck"
    stopped = launch(tiny_config(tiny_dataset, **{"optim.epochs": 1}), track=False,
                     checkpoint_root=tmp_path / "ck", reporter=InterruptAt(0, 1))
    assert stopped.status == "KILLED"
    assert (f"`cifarctl train --resume {stopped.run_id} --no-track --checkpoints "
            f"{tmp_path / 'ck'}`") in stopped.message


def test_a_finished_untracked_run_is_pointed_to_an_eval_command_that_works(
        data_home, tiny_dataset, tmp_path):
    """`--resume` of a finished `--no-track` run advised `cifarctl eval local-...`, which
    `eval` refused: it now takes the local id, in the folder the run trained into."""
    import shlex

    from cifarctl.errors import UsageError
    from cifarctl.training import launch

    root = tmp_path / "ck"
    done = launch(tiny_config(tiny_dataset, **{"optim.epochs": 1}), track=False,
                  checkpoint_root=root, quiet=True)
    assert done.status == "FINISHED" and done.run_id.startswith("local-")
    with pytest.raises(UsageError, match="nothing to resume") as refused:
        launch(None, resume_run_id=done.run_id, track=False, checkpoint_root=root, quiet=True)
    command = str(refused.value).split("`")[1]
    assert command == f"cifarctl eval {done.run_id} --checkpoints {root}"
    evaluated = CliRunner().invoke(app, [*shlex.split(command)[1:], "--json", "--no-log"])
    assert evaluated.exit_code == 0, evaluated.output
    assert str(root / done.run_id / "best.pt") in evaluated.stdout
    assert "eval_test_acc" in evaluated.stdout
    elsewhere = CliRunner().invoke(app, ["eval", done.run_id])  # the default folder
    assert elsewhere.exit_code == 2
    assert (f"no checkpoint checkpoints/{done.run_id}/best.pt of untracked run "
            f"{done.run_id}; pass the --checkpoints folder it trained into") in elsewhere.output


def test_a_damaged_local_checkpoint_points_to_the_copy_the_run_logged(
        mlflow_store, data_home, tiny_dataset):
    from cifarctl.errors import UsageError
    from cifarctl.training import launch

    stopped = launch(tiny_config(tiny_dataset, **{"optim.epochs": 2}),
                     reporter=InterruptAt(1, 1))
    assert stopped.status == "KILLED"
    local = Path("checkpoints") / stopped.run_id / "last.pt"
    local.write_bytes(local.read_bytes()[:1000])  # a disk that lost the file's end
    with pytest.raises(UsageError) as refused:
        launch(None, resume_run_id=stopped.run_id, quiet=True)
    assert str(refused.value).startswith(f"cannot read checkpoint {local}: ")
    assert str(refused.value).endswith(f"; to resume from the copy logged to the run instead, "
                                       f"if it has one, delete {local}")
    local.unlink()  # as advised: the logged copy, at the same step
    resumed = launch(None, resume_run_id=stopped.run_id, quiet=True)
    assert resumed.status == "FINISHED" and resumed.epochs_done == 2


def test_a_resumed_epochs_images_per_s_times_only_the_steps_it_took(
        data_home, tiny_dataset, tmp_path, monkeypatch):
    """The skipped batches of a mid-epoch resume are drawn again (the random streams must
    continue where they stopped) but not trained: they are no part of the epoch's pace."""
    from cifarctl.data.loader import DeviceLoader
    from cifarctl.training import launch

    root = tmp_path / "ck"
    cfg = tiny_config(tiny_dataset, **{"optim.epochs": 1})
    stopped = launch(cfg, track=False, checkpoint_root=root, reporter=InterruptAt(0, 12))
    assert stopped.status == "KILLED"
    real_epoch = DeviceLoader.epoch

    def slow_to_draw(self, epoch):  # 0.1 s a batch: 1.2 s for the 12 batches skipped
        for batch in real_epoch(self, epoch):
            time.sleep(0.1)
            yield batch

    monkeypatch.setattr(DeviceLoader, "epoch", slow_to_draw)
    resumed = launch(None, resume_run_id=stopped.run_id, track=False, checkpoint_root=root,
                     quiet=True)
    assert resumed.status == "FINISHED"
    metrics = resumed.history[0]
    # 500 training images (50 a class after validation), 32 a step, the last partial one
    # dropped: 15 steps, 3 of them taken after the resume
    timed = (15 - 12) * 32 / metrics["images_per_s"]  # the seconds its pace covers
    assert timed < 1.0, (timed, metrics["epoch_time_s"])  # 3 steps (0.3 s of drawing), not 15


def test_a_second_ctrl_c_ends_the_run_killed_with_the_way_back(mlflow_store, data_home,
                                                               tiny_dataset):
    from mlflow.tracking import MlflowClient

    from cifarctl.training import launch

    stopped = launch(tiny_config(tiny_dataset, **{"optim.epochs": 2}),
                     reporter=InterruptTwiceAt(1, 2))
    assert stopped.status == "KILLED" and stopped.epochs_done == 1
    assert stopped.message.startswith("interrupted twice: stopped at once in epoch 2")
    assert f"`cifarctl train --resume {stopped.run_id}`" in stopped.message
    assert MlflowClient().get_run(stopped.run_id).info.status == "KILLED"
    early = launch(tiny_config(tiny_dataset, **{"optim.epochs": 2}),
                   reporter=InterruptTwiceAt(0, 1))
    assert early.status == "KILLED" and "saved no checkpoint yet" in early.message


def test_a_run_a_live_process_trains_is_not_resumed_a_second_time(
        mlflow_store, data_home, tiny_dataset):
    """RUNNING with its trainer (host:pid tag) alive here: a resume would log every epoch
    twice. Refused, the run untouched; once that process is gone the resume goes ahead."""
    import socket

    from mlflow.tracking import MlflowClient

    from cifarctl.tracking.owner import TRAINER_TAG
    from cifarctl.training import launch

    stopped = launch(tiny_config(tiny_dataset, **{"optim.epochs": 2}), reporter=InterruptAt(1, 1))
    assert stopped.status == "KILLED"
    client = MlflowClient()
    tags = client.get_run(stopped.run_id).data.tags
    assert tags[TRAINER_TAG] == f"{socket.gethostname()}:{os.getpid()}"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # as if that process were still training it
        client.set_tag(stopped.run_id, TRAINER_TAG, f"{socket.gethostname()}:{sleeper.pid}")
        client.update_run(stopped.run_id, status="RUNNING")
        refused = run_cli("--resume", stopped.run_id, "-q")
        assert refused.exit_code == 2, refused.output
        assert f"is being trained right now by process {sleeper.pid}" in refused.output
        assert client.get_run(stopped.run_id).info.status == "RUNNING"
    finally:
        sleeper.kill()
        sleeper.wait()
    resumed = run_cli("--resume", stopped.run_id, "-q")  # its trainer died: RUNNING is stale
    assert resumed.exit_code == 0, resumed.output
    assert [m.step for m in client.get_metric_history(stopped.run_id, "train_loss")] == [0, 1]


def test_resume_of_a_sweep_parent_or_untracked_resume_of_a_tracked_run_says_so(mlflow_store):
    from cifarctl.tracking.mlflow_tracker import start_run

    parent = start_run(experiment="sweep", tags={"cifarctl.sweep_key": "abc"})
    parent.log_params({"sweep.spec": "experiments/demo-sweep.yaml"})
    parent.finish("KILLED")
    result = run_cli("--resume", parent.run_id)
    assert result.exit_code == 2
    assert f"run {parent.run_id} is a sweep's parent run" in result.output
    assert "`cifarctl sweep experiments/demo-sweep.yaml`" in result.output
    untracked = run_cli("--resume", "0123456789abcdef0123456789abcdef", "--no-track")
    assert untracked.exit_code == 2  # no checkpoint here; but first the warning
    assert "warning: --no-track: run 0123456789abcdef0123456789abcdef's MLflow run is left" \
        in untracked.output


def test_a_checkpoint_folder_that_cannot_exist_is_refused_before_any_run(mlflow_store,
                                                                         tmp_path):
    from cifarctl.checkpoint import save_checkpoint
    from cifarctl.errors import CifarctlError

    (tmp_path / "afile").write_text("in the way")
    result = run_cli("vanillacnn", "--dataset", "synthetic", "--checkpoints",
                     str(tmp_path / "afile"))
    assert result.exit_code == 2
    assert f"--checkpoints {tmp_path / 'afile'}: cannot create that folder" in result.output
    assert _runs_in_store() == []
    sweep = CliRunner().invoke(app, ["sweep", str(Path(__file__).parents[1] / "experiments" /
                                                 "demo-sweep.yaml"),
                                     "--checkpoints", str(tmp_path / "afile" / "x")])
    assert sweep.exit_code == 2 and "cannot create that folder" in sweep.output
    # a write that fails mid-run (the folder replaced by a file): one line, no temp file left
    with pytest.raises(CifarctlError, match="cannot write checkpoint .*afile/last.pt"):
        save_checkpoint(tmp_path / "afile" / "last.pt", {"epoch": 1})


def test_a_log_says_first_where_the_run_goes(mlflow_store, data_home, tiny_dataset):
    """In a log or pipe the first line names the run, its experiment and store, and what
    trains on what; the run id is the one MLflow holds."""
    import io

    from cifarctl.progress import LineReporter
    from cifarctl.training import launch

    stream = io.StringIO()
    outcome = launch(tiny_config(tiny_dataset, **{"optim.epochs": 1, "run.experiment": "logs"}),
                     reporter=LineReporter(stream))
    first = stream.getvalue().splitlines()[0]
    assert first == (f"run {outcome.run_id} in experiment 'logs' of {mlflow_store.uri}: "
                     f"vanillacnn, loss ce, 500 training images of tiny-synth0, 1 epoch on cpu")
