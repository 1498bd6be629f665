"""Checkpoints that follow the run (issue 20): uploaded each epoch in the background, metrics
never ahead of the uploaded checkpoint, no metric step logged twice, and the report's
histories one value per step. Fast: a recording tracker, or a real sqlite store."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from run_helpers import write_synthetic

from cifarctl.checkpoint import load_run_state
from cifarctl.config import load_config
from cifarctl.tracking import NullTracker
from cifarctl.training import train
from cifarctl.training.follow import CheckpointUpload, follows, snapshot


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory, "follow-synth", train_per_class=30,
                           test_per_class=10)


def tiny_config(dataset: Path, epochs: int = 3):
    return load_config(None, {"model.name": "vanillacnn", "data.dataset": str(dataset),
                              "optim.epochs": epochs, "optim.batch_size": 32,
                              "optim.warmup": 0, "optim.steps": [], "data.val_per_class": 5,
                              "run.device": "cpu"})


class Recording(NullTracker):
    """A tracker whose run follows its checkpoints: records every write, in order, with the
    epoch each uploaded checkpoint holds (read when the upload happens)."""

    run_id = "f" * 32
    checkpoints_follow = True

    def __init__(self, logged: set[int] = frozenset(), upload_s: float = 0.0) -> None:
        self.calls: list[tuple] = []
        self.logged, self.upload_s = set(logged), upload_s
        self.threads: set[str] = set()

    def log_artifact(self, path, artifact_path=None):
        time.sleep(self.upload_s)
        self.threads.add(threading.current_thread().name)
        if artifact_path == "checkpoints":
            self.calls.append(("upload", Path(path).name, load_run_state(Path(path)).epoch))

    def log_metrics(self, metrics, step=None):
        self.calls.append(("metrics", step))

    def logged_steps(self, key):
        return sorted(self.logged)


def test_each_epoch_uploads_its_checkpoint_in_the_background_before_its_metrics(
        data_home, tiny_dataset, tmp_path):
    tracker = Recording(upload_s=0.2)
    outcome = train(tiny_config(tiny_dataset), tracker=tracker, checkpoint_root=tmp_path)
    assert outcome.status == "FINISHED"
    per_epoch = [c for c in tracker.calls if c[0] == "metrics" and c[1] in (0, 1, 2)][:3]
    assert per_epoch == [("metrics", 0), ("metrics", 1), ("metrics", 2)]
    for epoch in range(3):  # last.pt of epoch e holds "continue with e + 1", then its metrics
        at = tracker.calls.index(("metrics", epoch))
        assert ("upload", "last.pt", epoch + 1) in tracker.calls[:at]
    assert all(t.startswith("checkpoint-upload") for t in tracker.threads)  # not the training
    # thread


def test_a_snapshot_keeps_what_was_written_when_the_next_epoch_replaces_it(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"epoch 1")
    (copy,) = snapshot([tmp_path / "last.pt"], tmp_path / ".upload")
    new = tmp_path / "last.pt.tmp"
    new.write_bytes(b"epoch 2")
    new.replace(tmp_path / "last.pt")  # as save_run_state does
    assert copy.read_bytes() == b"epoch 1"


def test_a_failed_upload_fails_at_the_next_epoch_not_silently(tmp_path):
    class Broken(Recording):
        def log_artifact(self, path, artifact_path=None):
            raise OSError("artifact store is gone")

    upload = CheckpointUpload(Broken())
    (tmp_path / "last.pt").write_bytes(b"x")
    upload.epoch(tmp_path, 0, {"train_loss": 1.0}, best_changed=False)
    with pytest.raises(OSError, match="artifact store is gone"):
        upload.wait()


def test_runs_follow_where_their_artifacts_are_not_local_files():
    from cifarctl.tracking.mlflow_tracker import is_local_artifacts

    assert is_local_artifacts("/home/me/mlruns/1/abc/artifacts")
    assert is_local_artifacts("file:///home/me/mlruns/1/abc/artifacts")
    assert not is_local_artifacts("mlflow-artifacts:/1/abc/artifacts")
    assert not is_local_artifacts("s3://bucket/1/abc/artifacts")
    assert not follows(NullTracker()) and follows(Recording())


def test_a_restart_without_a_checkpoint_logs_no_step_twice(data_home, tiny_dataset, tmp_path):
    """An earlier attempt logged epochs 0 and 1 and kept no checkpoint: training again from
    the start in the same run logs only the steps the run lacks."""
    tracker = Recording(logged={0, 1})
    train(tiny_config(tiny_dataset), tracker=tracker, checkpoint_root=tmp_path)
    assert [c[1] for c in tracker.calls if c[0] == "metrics"][0] == 2


def test_epochs_logged_before_still_upload_their_checkpoints_and_the_end_uploads_none_again(
        data_home, tiny_dataset, tmp_path):
    """A restart that re-trains epochs the run has metrics for keeps the run's checkpoint
    current from the first of them (a node lost again there resumes from it); a finished
    run's checkpoints, uploaded as it trained, are not uploaded a second time at its end."""
    tracker = Recording(logged={0, 1})
    train(tiny_config(tiny_dataset), tracker=tracker, checkpoint_root=tmp_path)
    uploads = [c for c in tracker.calls if c[0] == "upload"]
    assert [c for c in uploads if c[1] == "last.pt"] == [
        ("upload", "last.pt", 1), ("upload", "last.pt", 2), ("upload", "last.pt", 3)]
    assert len([c for c in uploads if c[1] == "best.pt"]) == len(
        {c for c in uploads if c[1] == "best.pt"})  # each best once, none repeated at the end


def test_a_resume_logs_the_steps_its_checkpoint_has_and_the_run_lacks(
        data_home, tiny_dataset, tmp_path):
    """The process died after uploading epoch 1's checkpoint, before its metrics: the resume
    logs epoch 1 from the checkpoint's history, then goes on."""
    first = train(tiny_config(tiny_dataset, epochs=2), tracker=Recording(),
                  checkpoint_root=tmp_path)
    state = load_run_state(first.checkpoint_dir / "last.pt")
    state.config["optim"]["epochs"] = 3
    tracker = Recording(logged={0})
    train(tiny_config(tiny_dataset), tracker=tracker, checkpoint_root=tmp_path, resume=state)
    assert [c[1] for c in tracker.calls if c[0] == "metrics"][:2] == [1, 2]


def test_the_reports_histories_take_one_value_per_step(mlflow_store, monkeypatch):
    from cifarctl.tracking import sqlite_reader
    from cifarctl.tracking.mlflow_tracker import start_run
    from cifarctl.tracking.runstore import RunStore

    runs = []
    for offset in (0.0, 0.5):
        tracker = start_run(experiment="h", tracking_uri=mlflow_store.uri)
        for step, value in [(0, 0.1), (1, 0.2), (0, 0.3), (2, 0.4)]:  # step 0 twice
            tracker.log_metrics({"test_acc": value + offset, "lr": 0.1}, step=step)
        tracker.finish()
        runs.append(tracker.run_id)
    store = RunStore(mlflow_store.uri)
    want = {r: {"test_acc": [(0, 0.3 + o), (1, 0.2 + o), (2, 0.4 + o)],
                "lr": [(0, 0.1), (1, 0.1), (2, 0.1)]} for r, o in zip(runs, (0.0, 0.5))}
    got = store.metric_histories(runs, ["test_acc", "lr"])  # one sqlite query
    assert got == want

    def unknown(*args):
        raise sqlite_reader.UseMlflow

    monkeypatch.setattr(sqlite_reader, "metric_points", unknown)  # one request per history
    assert store.metric_histories(runs, ["test_acc", "lr"]) == want
