"""`train --resume` of a run that stopped where it has no checkpoint to continue from: before
its first epoch's checkpoint (kill -9, a crash: it starts again in the same run), or after
its last one, while it ended (kill -9, a full disk: it is ended now).

Both used to be refused, which left the run RUNNING (or FAILED) for good, without its summary
metrics, figures or checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from run_helpers import write_synthetic
from typer.testing import CliRunner

from cifarctl.cli import app

TWO_EPOCHS = ["vanillacnn", "--epochs", "2", "--batch-size", "32", "--set", "optim.warmup=1",
              "--set", "optim.steps=[1]", "--set", "data.val_per_class=10",
              "--set", "run.device=cpu", "-q"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory, "resume-synth", train_per_class=40,
                           test_per_class=10)


def _train(*args: str):
    return CliRunner().invoke(app, ["train", *args])


def _only_run(client, experiment: str = "cifarctl"):
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


def _artifacts(client, run_id: str) -> set[str]:
    top = client.list_artifacts(run_id)
    return {a.path for a in top} | {a.path for a in client.list_artifacts(run_id, "checkpoints")}


def _reference(client, dataset: Path) -> dict[str, float]:
    """An uninterrupted run of the same config, in its own experiment."""
    done = _train(*TWO_EPOCHS, "--dataset", str(dataset), "--experiment", "straight")
    assert done.exit_code == 0, done.output
    return _only_run(client, "straight").data.metrics


@pytest.mark.parametrize("left_as", ["FAILED", "RUNNING"])
def test_a_run_that_stopped_while_it_ended_is_ended_by_its_resume(
        mlflow_store, data_home, dataset, monkeypatch, left_as):
    from mlflow.tracking import MlflowClient

    from cifarctl.training.record import RunRecord

    def full_disk(self) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(RunRecord, "_log_end", full_disk)
        stopped = _train(*TWO_EPOCHS, "--dataset", str(dataset))
    assert stopped.exit_code != 0, stopped.output
    client = MlflowClient()
    run = _only_run(client)
    run_id = run.info.run_id
    assert run.info.status == "FAILED" and "test_acc_at_best" not in run.data.metrics
    if left_as == "RUNNING":  # a kill -9: its process (here: this one) no longer trains it
        client.update_run(run_id, status="RUNNING")

    resumed = _train("--resume", run_id)
    assert resumed.exit_code == 0, resumed.output
    assert f"finishing run {run_id}: all its 2 epochs are trained" in resumed.output
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert {"training_curves.png", "per_class_accuracy.csv", "confusion_matrix.json",
            "checkpoints/best.pt", "checkpoints/last.pt"} <= _artifacts(client, run_id)
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [0, 1]
    reference = _reference(client, dataset)
    for key in ("test_acc_at_best", "best_epoch", "best_val_acc", "test_acc_class_0_at_best"):
        assert run.data.metrics[key] == pytest.approx(reference[key], abs=1e-6), key
    again = _train("--resume", run_id)  # now it is FINISHED: nothing left
    assert again.exit_code == 2 and "already trained all its 2 epochs" in again.output


def test_a_run_that_died_before_its_first_checkpoint_starts_again_in_the_same_run(
        mlflow_store, data_home, dataset, monkeypatch):
    from mlflow.tracking import MlflowClient

    from cifarctl.training.group import Group

    def crash(*args, **kwargs):
        raise RuntimeError("killed in the first epoch")

    with monkeypatch.context() as patch:
        patch.setattr(Group, "run_epoch", crash)
        stopped = _train(*TWO_EPOCHS, "--dataset", str(dataset))
    assert stopped.exit_code != 0
    client = MlflowClient()
    run_id = _only_run(client).info.run_id
    assert not (Path("checkpoints") / run_id / "last.pt").exists()
    client.update_run(run_id, status="RUNNING")  # as a kill -9 leaves it

    # its config is the one it logged: a different device would change a logged param
    moved = _train("--resume", run_id, "--device", "cuda")
    assert moved.exit_code == 2
    assert "stopped before its first checkpoint, so it starts again on the device it " \
           "logged (cpu)" in moved.output
    resumed = _train("--resume", run_id)
    assert resumed.exit_code == 0, resumed.output
    assert f"run {run_id} in experiment 'cifarctl'" in resumed.output
    assert "started again (it stopped before its first checkpoint)" in resumed.output
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [0, 1]
    reference = _reference(client, dataset)
    for key in ("train_loss", "test_acc", "test_acc_at_best", "best_epoch"):
        assert run.data.metrics[key] == pytest.approx(reference[key], abs=1e-6), key


def test_a_run_with_logged_epochs_but_no_checkpoint_here_is_still_refused(
        mlflow_store, data_home, dataset, tmp_path):
    """Its checkpoint is in another folder (a forgotten --checkpoints): starting again would
    retrain epochs it has logged already."""
    from mlflow.tracking import MlflowClient

    done = _train(*TWO_EPOCHS, "--dataset", str(dataset), "--checkpoints", str(tmp_path / "a"))
    assert done.exit_code == 0, done.output
    client = MlflowClient()
    run_id = _only_run(client).info.run_id
    client.update_run(run_id, status="KILLED")
    for artifact in ("best.pt", "last.pt"):  # as if it never logged them
        (Path(_only_run(client).info.artifact_uri.removeprefix("file://"))
         / "checkpoints" / artifact).unlink()
    refused = _train("--resume", run_id, "--checkpoints", str(tmp_path / "elsewhere"))
    assert refused.exit_code == 2
    assert f"no checkpoint to resume run {run_id}" in refused.output
    assert client.get_run(run_id).info.status == "KILLED"
