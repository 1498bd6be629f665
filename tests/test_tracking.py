"""The tracking interface against a real MLflow sqlite store, read back through MLflow's APIs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from data_fixtures import assert_one_line_error, run_cli

from cifarctl.errors import UsageError
from cifarctl.tracking import NullTracker, Tracker, open_tracker, resolve_tracking_uri
from cifarctl.tracking import retry as retry_mod
from cifarctl.tracking.retry import call_with_retry, is_transient
from cifarctl.tracking.store import check_reachable

# ---- no MLflow needed ---------------------------------------------------------------------


def test_importing_tracking_loads_neither_mlflow_nor_matplotlib():
    code = ("import sys, cifarctl.tracking as t, cifarctl.plots; "
            "tr = t.open_tracker(False); tr.log_metrics({'a': 1.0}); tr.finish(); "
            "print(sorted(m for m in ('mlflow', 'matplotlib', 'torch', 'pandas') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_null_tracker_accepts_every_call(tmp_path):
    tracker = open_tracker(False, experiment="ignored")
    assert isinstance(tracker, NullTracker) and isinstance(tracker, Tracker)
    assert tracker.run_id is None and tracker.artifact_uri is None
    tracker.log_params({"optim.lr": 0.1})
    tracker.set_tags({"loss": "ce"})
    tracker.log_metrics({"train_loss": 1.0}, step=3)
    tracker.log_metrics({"best_val_acc": 0.5})
    tracker.log_artifact(tmp_path / "missing.pt", "checkpoints")
    tracker.log_text("a: 1\n", "config.yaml")
    tracker.log_figure(object(), "curves.png")
    tracker.log_dataset("cifar10", "abc", "cifar10", context="training", num_rows=10)
    assert tracker.download_artifact("checkpoints/last.pt", tmp_path) is None
    for status in ("FINISHED", "FAILED", "KILLED"):
        tracker.finish(status)
    with pytest.raises(ValueError, match="FINISHED, FAILED, KILLED"):
        tracker.finish("DONE")
    with NullTracker() as t:
        t.log_metrics({"x": 1.0})


def test_resolve_tracking_uri_order_and_absolute_sqlite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.org:5000/")
    assert resolve_tracking_uri(None) == "http://example.org:5000"
    assert resolve_tracking_uri("sqlite:///runs/m.db") == f"sqlite:///{tmp_path}/runs/m.db"
    assert resolve_tracking_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert resolve_tracking_uri("store.db") == f"sqlite:///{tmp_path}/store.db"
    assert resolve_tracking_uri("postgresql://u@h/db") == "postgresql://u@h/db"


def test_the_dataset_insert_race_is_transient_in_each_databases_words():
    # as each store reports a second writer inserting the same dataset row (MLflow 3.17)
    raced = ["(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
             "datasets.name, datasets.digest",
             'BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates '
             'unique constraint "dataset_pk"',
             "(pymysql.err.IntegrityError) (1062, \"Duplicate entry '1-x-f' for key "
             "'datasets.PRIMARY'\")"]
    assert all(is_transient(RuntimeError(text)) for text in raced)
    assert not is_transient(RuntimeError('duplicate key value violates unique constraint '
                                         '"experiments_name_key"'))


def test_retry_repeats_transient_errors_only(monkeypatch):
    monkeypatch.setattr(retry_mod, "FIRST_DELAY_S", 0.001)

    class Busy(Exception):
        error_code = "TEMPORARILY_UNAVAILABLE"

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise Busy("busy")
        if len(calls) == 2:
            raise RuntimeError("wrapped") from OSError("database is locked")
        return "ok"

    assert call_with_retry(flaky) == "ok" and len(calls) == 3

    def bad():
        calls.append(1)
        raise ValueError("bad param")

    calls.clear()
    with pytest.raises(ValueError):
        call_with_retry(bad)
    assert len(calls) == 1 and not is_transient(ValueError("x"))

    def always_busy():
        calls.append(1)
        raise Busy("still busy")

    calls.clear()
    monkeypatch.setattr(retry_mod, "MAX_DELAY_S", 0.001)
    with pytest.raises(Busy):
        call_with_retry(always_busy)
    assert len(calls) == retry_mod.ATTEMPTS


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_one_quick_usage_error(monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    start = time.monotonic()
    with pytest.raises(UsageError) as err:
        open_tracker(True, experiment="x")
    assert time.monotonic() - start < 5
    assert str(err.value).startswith(f"cannot reach MLflow tracking server at {url}: ")
    assert str(err.value).endswith("start it or pass --tracking-uri")
    assert "\n" not in str(err.value)


def test_a_web_server_that_is_not_mlflow_is_one_line_for_train_and_eval(tmp_path):
    """Another web server on the port (a wrong port, a proxy): its 404s were a traceback from
    MLflow's first request; now one line before anything trains."""
    with socket.socket() as probe:  # a real HTTP server that knows no MLflow
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1", "--directory", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.1)
        wanted = f"{url} answered, but it is not an MLflow tracking server (HTTP 404 on /health)"
        train = run_cli("train", "vanillacnn", "--dataset", "synthetic", "--epochs", "1",
                        "--tracking-uri", url, "--checkpoints", str(tmp_path / "ck"))
        assert_one_line_error(train, 2, wanted, "--tracking-uri")
        evaluated = run_cli("eval", "0" * 32, "--tracking-uri", url)
        assert_one_line_error(evaluated, 2, wanted)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_silent_server_times_out_quickly():
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(UsageError, match="cannot reach MLflow tracking server"):
            check_reachable(url, timeout=0.5)
        assert time.monotonic() - start < 3


# ---- a real sqlite store ------------------------------------------------------------------

def _start(**kwargs):
    from cifarctl.tracking.mlflow_tracker import start_run

    return start_run(**{"experiment": "tests", **kwargs})


def test_run_round_trip(mlflow_store, tmp_path):
    import mlflow
    from matplotlib.figure import Figure

    tracker = _start(run_name="resnet32-focal-b0.999-s0", description="CB-focal, beta 0.999",
                     tags={"loss": "focal", "beta": 0.999})
    assert tracker.tracking_uri == mlflow_store.uri
    params = {f"p{i:03d}": i for i in range(250)}  # > 100: several requests
    params |= {"optim.steps": [40, 45], "long": "x" * 7000}
    tracker.log_params(params)
    tracker.set_tags({"seed": 0})
    for epoch in range(5):
        tracker.log_metrics({"train_loss": 1.0 / (epoch + 1), "val_acc": epoch / 10,
                             **{f"test_acc_class_{i}": i / 10 for i in range(10)}}, step=epoch)
    tracker.log_metrics({"best_val_acc": 0.4}, step=4)
    tracker.log_text("optim:\n  lr: 0.1\n", "config.yaml")
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    tracker.log_figure(fig, "plots/curves.png")
    (tmp_path / "best.pt").write_bytes(b"weights")
    tracker.log_artifact(tmp_path / "best.pt", "checkpoints")
    tracker.log_dataset("cifar10-lt100", "f" * 64, "cifar10", num_rows=12406)
    tracker.finish("FINISHED")
    tracker.finish("FAILED")  # a second finish changes nothing

    runs = mlflow.search_runs(experiment_names=["tests"])  # reads $MLFLOW_TRACKING_URI
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["run_id"] == tracker.run_id and row["status"] == "FINISHED"
    assert row["tags.mlflow.runName"] == "resnet32-focal-b0.999-s0"
    assert row["tags.mlflow.note.content"] == "CB-focal, beta 0.999"
    assert (row["tags.loss"], row["tags.beta"], row["tags.seed"]) == ("focal", "0.999", "0")
    assert row["params.p249"] == "249" and row["params.optim.steps"] == "[40, 45]"
    assert len(row["params.long"]) == 6000 and row["params.long"].endswith("[truncated]")
    assert row["metrics.train_loss"] == pytest.approx(0.2)
    assert row["metrics.test_acc_class_9"] == pytest.approx(0.9)

    client = tracker.client
    history = client.get_metric_history(tracker.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(e, pytest.approx(1 / (e + 1)))
                                                    for e in range(5)]
    assert {f.path for f in client.list_artifacts(tracker.run_id)} == {
        "config.yaml", "plots", "checkpoints"}
    assert [f.path for f in client.list_artifacts(tracker.run_id, "plots")] == [
        "plots/curves.png"]
    run_dir = mlflow_store.artifacts / "tests" / tracker.run_id / "artifacts"
    assert tracker.artifact_uri == str(run_dir)
    assert (run_dir / "plots" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "checkpoints" / "best.pt").read_bytes() == b"weights"

    (dataset_input,) = client.get_run(tracker.run_id).inputs.dataset_inputs
    assert dataset_input.dataset.name == "cifar10-lt100"
    assert dataset_input.dataset.digest == "f" * 36  # MLflow keeps 36 characters
    assert '"fingerprint": "' + "f" * 64 in dataset_input.dataset.profile
    assert '"num_rows": 12406' in dataset_input.dataset.profile
    assert [(t.key, t.value) for t in dataset_input.tags] == [("mlflow.data.context",
                                                               "training")]
    got = tracker.download_artifact("checkpoints/best.pt", tmp_path / "dl")
    assert got is not None and got.read_bytes() == b"weights"
    assert tracker.download_artifact("checkpoints/none.pt", tmp_path / "dl") is None


def test_default_store_is_mlflow_db_in_cwd_with_mlruns_beside_it(mlflow_store, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    tracker = _start(experiment="lt100")
    assert tracker.tracking_uri == mlflow_store.uri  # mlflow_store.db is ./mlflow.db
    location = tracker.client.get_experiment(tracker.experiment_id).artifact_location
    assert location == str(mlflow_store.artifacts / "lt100")
    assert tracker.artifact_uri.startswith(location + "/")
    tracker.finish()


def test_resume_continues_the_same_run(mlflow_store):
    first = _start(run_name="r")
    first.log_params({"optim.lr": 0.1})
    first.log_metrics({"train_loss": 2.0}, step=0)
    first.finish("KILLED")

    again = _start(run_id=first.run_id)
    assert again.run_id == first.run_id
    assert again.client.get_run(first.run_id).info.status == "RUNNING"
    again.log_params({"optim.lr": 0.1})  # the same value again is fine
    again.log_metrics({"train_loss": 1.0}, step=1)
    again.finish("FINISHED")

    client = again.client
    assert client.get_run(first.run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(first.run_id, "train_loss")] == [0, 1]
    assert len(client.search_runs([again.experiment_id])) == 1
    with pytest.raises(UsageError, match="params cannot change"):
        again.log_params({"optim.lr": 0.2})


def test_unknown_ids_are_usage_errors(mlflow_store):
    with pytest.raises(UsageError, match="^unknown run id 'feedface' in sqlite:///"):
        _start(run_id="feedface")
    with pytest.raises(UsageError, match="^unknown parent run id 'feedface'"):
        _start(parent_run_id="feedface")


def test_children_nest_under_their_parent(mlflow_store):
    from cifarctl.tracking.runstore import open_store

    parent = _start(experiment="sweep", run_name="beta-sweep")
    children = [_start(experiment="sweep", run_name=f"trial-{i}", parent_run_id=parent.run_id,
                       tags={"trial_key": f"k{i}"}) for i in range(2)]
    children[0].finish("FINISHED")
    children[1].finish("FAILED")
    parent.finish()

    store = open_store()
    found = store.find_runs("sweep", f"tags.mlflow.parentRunId = '{parent.run_id}'",
                            order_by=["tags.trial_key ASC"])
    assert [r.tags["trial_key"] for r in found] == ["k0", "k1"]
    assert {r.run_id for r in found} == {c.run_id for c in children}
    assert [r.run_id for r in store.children(parent.run_id)] == [c.run_id for c in children]
    assert [store.get_run(c.run_id).status for c in children] == ["FINISHED", "FAILED"]
    assert store.find_runs("no-such-experiment") == []


def test_context_manager_marks_failures(mlflow_store):
    with pytest.raises(RuntimeError), _start() as tracker:
        raise RuntimeError("diverged")
    assert tracker.client.get_run(tracker.run_id).info.status == "FAILED"


def test_store_errors_are_one_line_usage_errors(mlflow_store, tmp_path):
    from cifarctl.tracking.mlflow_tracker import connect

    # MLflow 3.17 refuses the old file store unless MLFLOW_ALLOW_FILE_STORE=true
    with pytest.raises(UsageError, match="^file://.* is a folder \\(file\\) store, which MLflow "
                       "no longer opens by default: pass --tracking-uri sqlite:///PATH") as err:
        connect(f"file://{tmp_path}/filestore")
    assert "\n" not in str(err.value)

    tracker = _start(experiment="gone")
    tracker.finish()
    tracker.client.delete_experiment(tracker.experiment_id)
    with pytest.raises(UsageError, match="experiment 'gone' is deleted; restore it"):
        _start(experiment="gone")


def _serve(store, port: int) -> subprocess.Popen:
    """`mlflow server` on `store`, as a user would run it (job runner off: it starts slowly)."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store.uri,
         "--default-artifact-root", str(store.artifacts), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_http_server_round_trip(mlflow_store, tmp_path, monkeypatch):
    port = _closed_port()
    url = f"http://127.0.0.1:{port}"
    server = _serve(mlflow_store, port)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                check_reachable(url, timeout=1)
                break
            except UsageError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.3)
        tracker = _start(tracking_uri=url + "/", experiment="remote", run_name="over-http",
                         description="logged through a server")
        tracker.log_params({"optim.lr": 0.1})
        tracker.log_metrics({"train_loss": 1.5, "val_acc": 0.25}, step=0)
        tracker.log_dataset("synthetic", "abc", "synthetic", num_rows=64)
        tracker.log_text("x: 1\n", "config.yaml")
        tracker.finish()
        assert tracker.tracking_uri == url
        run = tracker.client.get_run(tracker.run_id)
        assert run.info.status == "FINISHED" and run.data.metrics["val_acc"] == 0.25
        assert run.data.tags["mlflow.note.content"] == "logged through a server"
        assert [f.path for f in tracker.client.list_artifacts(tracker.run_id)] == ["config.yaml"]
        assert len(run.inputs.dataset_inputs) == 1
        _read_back_over_http(url, tracker.run_id)
        _lose_the_server(server, tracker, url, monkeypatch)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _lose_the_server(server: subprocess.Popen, tracker, url: str,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The server dies under a run: one line once MLflow's retries are spent (bounded by
    `connect`'s defaults; one retry here, to keep the test short), not MLflow's paragraph."""
    from cifarctl.errors import CifarctlError

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "4"  # set by connect
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"
    server.terminate()
    server.wait(timeout=30)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    with pytest.raises(CifarctlError) as lost:
        tracker.log_metrics({"val_acc": 0.5}, step=1)
    assert str(lost.value) == (
        f"lost the MLflow tracking server at {url} (Connection refused); start it again and "
        f"rerun: a run resumes from its last checkpoint (`cifarctl train --resume RUN_ID`, or "
        f"the same `cifarctl sweep` again)")


def test_a_users_mlflow_http_settings_win(monkeypatch, tmp_path):
    from cifarctl.tracking.mlflow_tracker import connect

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"


def _read_back_over_http(url: str, run_id: str) -> None:
    """The read side on a server store: no sqlite file, so every read goes through MLflow."""
    from cifarctl.tracking.runstore import open_store

    store = open_store(url + "/")
    assert store.uri == url
    selection = store.select(["remote"])
    assert [r.run_id for r in selection.runs] == [run_id]
    assert selection.experiments == {selection.runs[0].experiment_id: "remote"}
    run = store.get_run(run_id)
    assert run.status == "FINISHED" and run.params == {"optim.lr": "0.1"}
    assert store.metric_history(run_id, "val_acc") == [(0, 0.25)]
    assert store.list_artifacts(run_id) == {"config.yaml"}


def test_tracker_threads_share_one_client(mlflow_store):
    """Fused training: one process, K runs logged at once through one store."""
    trackers = [_start(run_name=f"fused-{k}") for k in range(3)]

    def log(tracker):
        for epoch in range(5):
            tracker.log_metrics({"train_loss": 1.0, "train_acc": 0.5}, step=epoch)

    threads = [threading.Thread(target=log, args=(t,)) for t in trackers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for tracker in trackers:
        tracker.finish()
        history = tracker.client.get_metric_history(tracker.run_id, "train_acc")
        assert [m.step for m in history] == list(range(5))


def test_log_artifact_needs_an_existing_file(mlflow_store, tmp_path: Path):
    tracker = _start()
    with pytest.raises(FileNotFoundError, match="no artifact to log"):
        tracker.log_artifact(tmp_path / "missing.pt")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a.txt").write_text("a")
    tracker.log_artifact(tmp_path / "dir", "folder")
    assert [f.path for f in tracker.client.list_artifacts(tracker.run_id, "folder")] == [
        "folder/a.txt"]
    tracker.finish()


def test_a_store_path_that_cannot_be_a_database_is_refused_at_once(tmp_path):
    """Not MLflow's two minutes of retries and a sqlalchemy traceback: one line, at once."""
    from cifarctl.tracking.mlflow_tracker import connect

    (tmp_path / "runs.db").mkdir()
    with pytest.raises(UsageError, match="runs.db is a directory"):
        connect(f"sqlite:///{tmp_path / 'runs.db'}")
    (tmp_path / "junk.db").write_text("not sqlite")
    with pytest.raises(UsageError, match="junk.db: file is not a database"):
        connect(f"sqlite:///{tmp_path / 'junk.db'}")
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="cannot create .*file for MLflow store"):
        connect(f"sqlite:///{tmp_path / 'file' / 'runs.db'}")


def test_a_store_in_a_folder_that_is_not_writable_is_refused_at_once(tmp_path):
    """MLflow retried creating the database for ~100 s, printing 40 lines of warnings."""
    import shutil

    folder = tmp_path / "read-only"
    folder.mkdir()
    code = ("from cifarctl.tracking.mlflow_tracker import connect\n"
            f"connect('sqlite:///{folder / 'mlflow.db'}')")
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:  # root writes through a folder's mode: mount it read-only instead
        if shutil.which("unshare") is None or subprocess.run(
                ["unshare", "-m", "true"], capture_output=True).returncode != 0:
            pytest.skip("root, and no mount namespace (unshare -m) for a read-only folder")
        mount = f"mount --bind {folder} {folder} && mount -o remount,ro,bind {folder} {folder}"
        command = ["unshare", "-m", "sh", "-c", f'{mount} && exec "$@"', "sh", *command]
    else:
        folder.chmod(0o555)
    start = time.monotonic()
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 20
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1].endswith(
        f"UsageError: cannot create MLflow store sqlite:///{folder / 'mlflow.db'}: {folder} is "
        f"not writable; pass --tracking-uri sqlite:///PATH somewhere writable"), out.stderr
    assert "Operation will be retried" not in out.stderr
    folder.chmod(0o755)
