"""`RunStore`, the read side of tracking, on a real MLflow sqlite store (issue 17).

The store holds what readers meet: finished, killed and failed runs with params, tags and
metrics (a NaN among them), a sweep parent with children, a deleted run, a report run, a
second experiment and a deleted one. Its two readers, MLflow's API and the sqlite tables
read directly, must return the same runs in the same order, and the same report frame.
"""

from __future__ import annotations

import math
import shutil
import sqlite3
import subprocess
import sys

import pytest

from cifarctl.errors import UsageError

UNKNOWN = "feedface" * 4  # a well-formed run id no store has


def _run(uri: str, experiment: str, *, params=None, metrics=None, tags=None,
         parent: str | None = None, status: str = "FINISHED") -> str:
    from cifarctl.tracking.mlflow_tracker import start_run

    tracker = start_run(experiment=experiment, tracking_uri=uri, parent_run_id=parent,
                        run_name=f"{experiment}-{len(params or {})}", tags=tags or {})
    tracker.log_params(params or {})
    for step, values in enumerate(metrics or []):
        tracker.log_metrics(values, step=step)
    tracker.log_text("{}", "confusion_matrix.json")
    tracker.finish(status)
    return tracker.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory, _mlflow_template_db) -> dict:
    """The store of the module docstring: its uri, database and the ids tests need."""
    folder = tmp_path_factory.mktemp("runstore")
    db = folder / "mlflow.db"
    shutil.copyfile(_mlflow_template_db, db)
    uri = f"sqlite:///{db}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # MLflow's first open makes a Default experiment in ./mlruns
        return _fill(uri, db, folder)


def _fill(uri: str, db, folder) -> dict:
    from mlflow.tracking import MlflowClient

    ids = {}
    for seed, status in ((0, "FINISHED"), (1, "KILLED"), (2, "FAILED")):
        ids[f"seed{seed}"] = _run(
            uri, "lt100", params={"run.seed": seed, "loss.name": "focal", "loss.beta": 0.99},
            metrics=[{"test_acc": 0.2, "lr": 0.1}, {"test_acc": 0.4 + seed / 100,
                                                    "test_acc_at_best": 0.4, "odd": float("nan")}],
            tags={"loss": "focal", "seed": seed}, status=status)
    ids["parent"] = _run(uri, "sweep", params={"sweep.key": "c0ffee"},
                         tags={"cifarctl.sweep_key": "c0ffee"})
    ids["children"] = [_run(uri, "sweep", params={"run.seed": s}, parent=ids["parent"],
                            metrics=[{"test_acc_at_best": 0.5 + s / 10}],
                            tags={"cifarctl.trial_key": f"k{s}"}) for s in range(2)]
    ids["deleted"] = _run(uri, "lt100", params={"run.seed": 9})
    ids["report"] = _run(uri, "lt100-reports", tags={"cifarctl.kind": "report"})
    gone = _run(uri, "gone", params={"run.seed": 0})
    client = MlflowClient(uri)
    client.delete_run(ids["deleted"])
    client.delete_experiment(client.get_run(gone).info.experiment_id)
    return {"uri": uri, "db": db, "folder": folder, **ids}


def _store(store):
    from cifarctl.tracking.runstore import RunStore

    return RunStore(store["uri"])


def _comparable(selection) -> tuple:
    """A Selection with NaN metrics as a string (NaN != NaN would make equal runs differ)."""
    from dataclasses import asdict

    runs = [{**asdict(r), "metrics": {k: "NaN" if math.isnan(v) else v
                                      for k, v in r.metrics.items()}} for r in selection.runs]
    return runs, selection.experiments


SELECTIONS = [{}, {"experiments": ["lt100"]}, {"experiments": ["lt100", "sweep"]},
              {"parent": "PARENT"}, {"parent": "PARENT", "experiments": ["sweep"]}]


@pytest.mark.parametrize("kwargs", SELECTIONS)
def test_both_readers_select_the_same_runs_in_the_same_order(store, kwargs):
    kwargs = {k: store["parent"] if v == "PARENT" else v for k, v in kwargs.items()}
    fast = _store(store).select(reader="sqlite", **kwargs)
    slow = _store(store).select(reader="mlflow", **kwargs)
    assert _comparable(fast) == _comparable(slow)
    assert fast.runs == sorted(fast.runs, key=lambda r: (r.start_time, r.run_id))
    ids = {r.run_id for r in fast.runs}
    assert store["deleted"] not in ids and len(ids) == len(fast.runs)
    if "parent" in kwargs:
        assert ids == set(store["children"])
        assert list(fast.experiments.values()) == ["sweep"]


def test_both_readers_give_the_same_report_frame(store):
    """What `cifarctl report` reads, exactly, cell by cell and in the same order: report
    runs and deleted runs left out, a NaN metric kept as NaN."""
    import pandas as pd

    from cifarctl.report.runs import load_runs

    for kwargs in ({}, {"experiments": ["lt100"]}, {"parent": store["parent"]}):
        fast = load_runs(store["uri"], reader="sqlite", **kwargs)
        slow = load_runs(store["uri"], reader="mlflow", **kwargs)
        pd.testing.assert_frame_equal(fast.frame, slow.frame)
        assert fast.experiments == slow.experiments
    frame = load_runs(store["uri"], reader="sqlite").frame
    assert store["report"] not in set(frame["run_id"])
    assert store["deleted"] not in set(frame["run_id"])
    assert frame.loc[frame["run_id"] == store["seed0"], "metrics.odd"].isna().all()
    assert sorted(set(frame["experiment"])) == ["lt100", "sweep"]


def test_the_fast_path_reads_without_importing_mlflow(store):
    """The point of the sqlite reader: `cifarctl report` without a filter never pays the
    seconds MLflow takes to import and open the store."""
    code = ("import sys; from cifarctl.report.runs import load_runs; "
            f"print(len(load_runs({store['uri']!r}).frame), 'mlflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["6", "False"]  # 3 in lt100, a parent and 2 children


def test_what_the_fast_path_cannot_serve_goes_through_mlflow(store, tmp_path):
    from cifarctl.tracking.runstore import RunStore
    from cifarctl.tracking.sqlite_reader import UseMlflow

    with pytest.raises(UseMlflow):  # the parent is not there: MLflow says why
        _store(store).select(parent=store["deleted"], reader="sqlite")
    with pytest.raises(UsageError, match=f"^parent run '{store['deleted']}' is deleted"):
        _store(store).select(parent=store["deleted"])
    with pytest.raises(UsageError, match=f"^unknown parent run id '{UNKNOWN}' in "):
        _store(store).select(parent=UNKNOWN)
    # experiments in MLflow workspaces: which a user sees is MLflow's decision
    db = tmp_path / "mlflow.db"
    shutil.copyfile(store["db"], db)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE experiments SET workspace = 'team' WHERE name = 'sweep'")
    with pytest.raises(UseMlflow):
        RunStore(f"sqlite:///{db}").select(reader="sqlite")
    with pytest.raises(UsageError, match="^cannot open MLflow store .*workspace"):
        RunStore(f"sqlite:///{db}").select()  # MLflow's own word on such a store


def test_a_filter_goes_to_mlflow_and_a_bad_one_says_why(store):
    from cifarctl.report.runs import load_runs
    from cifarctl.tracking.stored import InvalidFilter

    found = _store(store).select(["lt100"], filter_string="params.`run.seed` = '1'")
    assert [r.run_id for r in found.runs] == [store["seed1"]]
    with pytest.raises(InvalidFilter) as err:
        _store(store).select(filter_string="params.x ==== 1")
    assert err.value.reason and "\n" not in err.value.reason
    with pytest.raises(UsageError, match=r"^invalid --filter 'params.x ==== 1': .+; e\.g\. "):
        load_runs(store["uri"], filter_string="params.x ==== 1")


def test_unknown_experiments_and_runs_are_usage_errors(store):
    uri = _store(store).uri
    for reader in ("sqlite", "mlflow"):
        with pytest.raises(UsageError, match=r"^unknown experiment 'nope' in .*\(experiments: "
                                             r"Default, lt100, lt100-reports, sweep\)$"):
            _store(store).select(["nope"], reader=reader)
        with pytest.raises(UsageError, match=f"^parent run {store['parent']} is in experiment "
                                             f".*, not in lt100; drop --experiment"):
            _store(store).select(["lt100"], parent=store["parent"], reader=reader)
    with pytest.raises(UsageError) as err:
        _store(store).get_run(UNKNOWN)
    assert str(err.value) == (f"unknown run id '{UNKNOWN}' in {uri}; check the id and "
                              f"--tracking-uri")
    with pytest.raises(UsageError, match=f"^run '{store['deleted']}' is deleted; restore it"):
        _store(store).get_run(store["deleted"])


def test_one_run_its_children_histories_and_artifacts(store, tmp_path):
    reader = _store(store)
    run = reader.get_run(store["seed0"])
    assert (run.status, run.params["loss.beta"], run.tags["seed"]) == ("FINISHED", "0.99", "0")
    assert run.metrics["test_acc"] == 0.4 and run.experiment_id in reader.experiments().values()
    assert reader.metric_history(run.run_id, "test_acc") == [(0, 0.2), (1, 0.4)]
    assert reader.metric_history(run.run_id, "no_such_metric") == []
    assert [c.run_id for c in reader.children(store["parent"])] == store["children"]
    assert [c.run_id for c in reader.children(store["parent"], "sweep",
                                              "tags.`cifarctl.trial_key` = 'k1'")] == \
        store["children"][1:]
    assert reader.children(store["parent"], "lt100") == []
    assert [r.run_id for r in reader.find_runs("lt100", order_by=["params.`run.seed` DESC"])] \
        == [store["seed2"], store["seed1"], store["seed0"]]
    assert reader.list_artifacts(run.run_id) == {"confusion_matrix.json"}
    assert reader.list_artifacts(run.run_id, "checkpoints") == set()
    local = reader.download_artifact(run.run_id, "confusion_matrix.json", tmp_path / "dl")
    assert local == tmp_path / "dl" / "confusion_matrix.json" and local.read_text() == "{}"
    assert reader.download_artifact(run.run_id, "checkpoints/best.pt", tmp_path) is None


def test_what_readers_write_leaves_the_rest_of_the_run_alone(mlflow_store):
    from cifarctl.tracking.mlflow_tracker import start_run
    from cifarctl.tracking.runstore import open_store

    tracker = start_run(experiment="w", run_name="trained")
    tracker.log_metrics({"test_acc": 0.5}, step=3)
    tracker.finish("FINISHED")
    store = open_store()
    before = store.get_run(tracker.run_id)
    store.tracker(tracker.run_id).log_metrics({"eval_test_acc": 0.6}, step=0)  # as `eval`
    after = store.get_run(tracker.run_id)
    assert after.status == "FINISHED" and after.run_name == "trained"
    assert after.metrics == {"test_acc": 0.5, "eval_test_acc": 0.6}
    assert after.start_time == before.start_time
    running = start_run(experiment="w")
    store.set_tags(running.run_id, {"trials_ok": 3, "note": "x"})
    store.set_status(running.run_id, "KILLED")
    ended = store.get_run(running.run_id)
    assert ended.status == "KILLED" and ended.tags["trials_ok"] == "3"
    with pytest.raises(ValueError, match="must be one of FINISHED, FAILED, KILLED"):
        store.set_status(running.run_id, "DONE")


def test_opening_checks_the_store_at_once(tmp_path):
    """`open_store` fails on the call, with the same one-line errors as the write side;
    `check_store` refuses a file that holds no store before MLflow would create one."""
    from cifarctl.tracking.runstore import RunStore, open_store
    from cifarctl.tracking.store import check_store

    port = _closed_port()
    with pytest.raises(UsageError, match=f"^cannot reach MLflow tracking server at "
                                         f"http://127.0.0.1:{port}"):
        open_store(f"http://127.0.0.1:{port}")
    RunStore(f"http://127.0.0.1:{port}")  # lazy: nothing is opened until a read
    missing = tmp_path / "typo.db"
    with pytest.raises(UsageError, match=f"^no MLflow store at {missing}: nothing was"):
        check_store(f"sqlite:///{missing}")
    assert not missing.exists()


def _closed_port() -> int:
    """A local port nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
