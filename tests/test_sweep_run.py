"""`cifarctl sweep` for real: worker processes, a real MLflow store, signals, Ray (issue 5).

Every trial trains `vanillacnn` on 40 synthetic images per class for a few epochs, so most
of a test's time is processes starting (the sweep's, and its fork server importing torch and
MLflow).
Those tests are marked slow; the few fast ones check the pieces without training.
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
from run_helpers import log_one_dataset_from_many_runs_at_once, write_synthetic
from typer.testing import CliRunner

from cifarctl.cli import app
from cifarctl.errors import UsageError
from cifarctl.sweep.ray_backend import store_warning
from cifarctl.sweep.runner import pin_gpu, visible_gpus
from cifarctl.sweep.spec import expand, load_spec

PER_CLASS = [f"test_acc_class_{i}" for i in range(10)]


@pytest.fixture(scope="session")
def sweep_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 training + 10 test images per class, as CIFAR python batches."""
    return write_synthetic(tmp_path_factory, "sweep-synth", train_per_class=40,
                           test_per_class=10, seed=1)


def write_spec(folder: Path, dataset: Path, *, grid=None, include=None, epochs: int = 2,
               name: str = "tiny") -> Path:
    """A tiny sweep over `dataset`: vanillacnn, batch 32, a 5-per-class validation split."""
    doc = {"base": {"model": {"name": "vanillacnn"},
                    "data": {"dataset": str(dataset), "val_per_class": 5, "imbalance": 2},
                    "optim": {"epochs": epochs, "batch_size": 32, "warmup": 0, "steps": [],
                              "lr": 0.05},
                    "run": {"device": "cpu"}},
           "grid": grid or {}, "include": include or []}
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(doc))
    return path


def sweep_cli(*args: str):
    return CliRunner().invoke(app, ["sweep", *args])


def runs_of(experiment: str):
    """(parents, children) of an experiment in the test's store, as StoredRuns."""
    from cifarctl.tracking.runstore import open_store

    runs = open_store().find_runs(experiment)
    parents = [r for r in runs if "cifarctl.sweep_key" in r.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.tags]
    assert len(parents) + len(children) == len(runs)
    return parents, children


def steps_of(run_id: str, metric: str) -> list[int]:
    from cifarctl.tracking.runstore import open_store

    return [step for step, _ in open_store().metric_history(run_id, metric)]


# ---- pieces, fast ----------------------------------------------------------------------------

def test_workers_are_pinned_round_robin_to_the_visible_gpus(monkeypatch):
    assert [pin_gpu(slot, ["0", "1"]) for slot in range(5)] == ["0", "1", "0", "1", "0"]
    assert pin_gpu(3, []) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")  # a user's own restriction is kept
    assert visible_gpus() == ["2", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_a_remote_cluster_with_a_local_store_gets_a_clear_warning():
    warning = store_warning("ray://head:10001", "sqlite:////home/me/mlflow.db")
    assert "every node must reach it" in warning and "mlflow server" in warning
    assert store_warning(None, "sqlite:////home/me/mlflow.db") is None
    assert store_warning("ray://head:10001", "http://mlflow:5000") is None


def test_a_sweep_already_running_on_this_machine_is_refused(mlflow_store, tmp_path):
    """Its driver's heartbeat is fresh (and it lives): refused; once it is gone, taken over at
    once, without waiting for the heartbeat to age."""
    from cifarctl.names import SWEEP_HEARTBEAT_TAG, SWEEP_OWNER_TAG
    from cifarctl.sweep.store import open_sweep
    from cifarctl.tracking.runstore import open_store

    plan = expand(load_spec(write_spec(tmp_path, tmp_path, grid={"seed": [0]})))
    store = open_store()
    first = open_sweep(store, plan)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        owner = f"{socket.gethostname()}:{sleeper.pid}"
        store.set_tags(first.parent_id, {SWEEP_HEARTBEAT_TAG: f"{owner} at {time.time():.0f}",
                                         SWEEP_OWNER_TAG: owner})
        with pytest.raises(UsageError, match=f"already running \\(process {sleeper.pid}, parent "
                                             f"run {first.parent_id}, its heartbeat"):
            open_sweep(store, plan)
        store.connect().delete_tag(first.parent_id, SWEEP_HEARTBEAT_TAG)  # an older cifarctl's
        with pytest.raises(UsageError, match=f"already running \\(process {sleeper.pid}"):
            open_sweep(store, plan)
    finally:
        sleeper.kill()
        sleeper.wait()
    again = open_sweep(store, plan)  # its owner is gone: the same parent is taken over
    assert again.parent_id == first.parent_id


def _no_runs() -> None:
    from cifarctl.tracking.mlflow_tracker import connect

    client = connect()
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []


@pytest.mark.parametrize("bad, reason", [
    ({"data.dataset": "no-such-dataset", "seed": 5}, "no-such-dataset does not exist"),
    ({"data.imbalance": 1e9, "seed": 5}, "leaves class 2 without training images"),
    ({"optim.batch_size": 4096, "seed": 5}, "optim.batch_size=4096 is larger than the"),
    ({"run.device": "cuda", "seed": 5}, "no CUDA device is available"),
])
def test_a_trial_that_cannot_train_here_is_refused_before_any_run_exists(
        mlflow_store, data_home, sweep_dataset, tmp_path, monkeypatch, bad, reason):
    """Device, dataset and splits are checked in the sweep's process first: one line naming
    the trial, exit 2, and no parent run with one FAILED child per trial behind it."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this machine
    spec = write_spec(tmp_path, sweep_dataset, grid={"seed": [0, 1]}, include=[bad])
    result = sweep_cli(str(spec), "--workers", "2")
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith("error: trial 3 {") and reason in line and "\n" not in line
    _no_runs()


def _fabricate_sweep(plan, statuses: dict[int, str]) -> dict[int, str]:
    """An earlier attempt at `plan`, without training: its parent (KILLED) and one child per
    trial index in `statuses`, ended with that status. Returns index -> child run id."""
    from cifarctl.sweep.store import create_child, open_sweep
    from cifarctl.tracking.runstore import open_store

    store = open_store()
    parent = open_sweep(store, plan).parent_id
    ids = {}
    for index, status in statuses.items():
        ids[index] = create_child(store, plan, plan.trials[index], parent)
        store.set_status(ids[index], status)
    store.set_status(parent, "KILLED")
    return ids


def test_an_extended_spec_skips_trials_another_sweep_finished(
        mlflow_store, data_home, sweep_dataset, tmp_path, monkeypatch):
    """Seeds 0, 1 swept before; a spec with seed 1 only is a new sweep (new key, new parent)
    but the same trial: it is skipped, not trained a second time. Asked for on a device this
    machine lacks: nothing is left to train, so nothing is refused."""
    import torch

    from cifarctl.tracking.runstore import open_store

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this machine

    old = expand(load_spec(write_spec(tmp_path, sweep_dataset, grid={"seed": [0, 1]})))
    ids = _fabricate_sweep(old, {0: "FINISHED", 1: "FINISHED"})
    spec = write_spec(tmp_path, sweep_dataset, grid={"seed": [1]}, name="tiny-more")
    result = CliRunner().invoke(app, ["sweep", str(spec), "--experiment", "tiny",
                                      "--device", "cuda"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "skipping 1 of 1 trial already FINISHED" in result.output
    assert "1 skipped" in result.output
    parents, children = runs_of("tiny")
    old_parent = open_store().get_run(ids[1]).tags["mlflow.parentRunId"]
    assert f"(1 by another sweep, parent run {old_parent})" in result.output
    assert len(parents) == 2 and len(children) == 2  # no new child: nothing trained
    assert open_store().get_run(ids[1]).status == "FINISHED"


def test_a_sweep_whose_data_changed_is_refused_and_its_runs_left_as_they_were(
        mlflow_store, data_home, sweep_dataset, tmp_path):
    """A KILLED trial whose checkpoint holds another dataset fingerprint cannot resume (one
    run, two datasets); the sweep says so before touching the parent, so a rerun does not
    mark the trial FAILED over and over with no way out."""
    import torch

    from cifarctl.tracking.runstore import open_store

    spec = write_spec(tmp_path, sweep_dataset, grid={"seed": [0, 1]})
    plan = expand(load_spec(spec))
    ids = _fabricate_sweep(plan, {0: "FINISHED", 1: "KILLED"})
    checkpoint = Path("checkpoints") / ids[1] / "last.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"epoch": 1, "dataset_fingerprint": "feed" * 16}, checkpoint)
    result = sweep_cli(str(spec))
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith("error: trial 2 {") and "\n" not in line
    assert f"its run {ids[1]} began on" in line and "fingerprint feedfeed" in line
    assert "--experiment NAME" in line
    parents, children = runs_of("tiny")
    assert [p.status for p in parents] == ["KILLED"]
    assert sorted(c.status for c in children) == ["FINISHED", "KILLED"]
    assert open_store().get_run(ids[1]).status == "KILLED"


def test_workers_logging_the_same_dataset_at_once_lose_nothing(mlflow_store):
    """Trials that start together log the same dataset: MLflow's check-then-insert races
    (UNIQUE constraint failed: datasets...); the tracking layer retries it (found by the Ray
    test, whose two tasks start at the same moment). PostgreSQL: test_cluster.py."""
    errors = log_one_dataset_from_many_runs_at_once("race")
    assert not errors, errors


# ---- real sweeps -----------------------------------------------------------------------------

@pytest.mark.slow
def test_four_workers_one_sqlite_store_one_parent_every_child_and_metric(
        mlflow_store, data_home, sweep_dataset, tmp_path):
    spec = write_spec(tmp_path, sweep_dataset, grid={"seed": [0, 1, 2, 3]})
    plan = expand(load_spec(spec))
    result = sweep_cli(str(spec), "--workers", "4")
    assert result.exit_code == 0, result.output
    assert "4 ok" in result.output and "Traceback" not in result.output

    (parent,), children = runs_of("tiny")
    assert parent.status == "FINISHED"
    assert parent.tags["trial_count"] == "4" and parent.tags["trials_ok"] == "4"
    assert parent.params["grid.run.seed"] == "[0, 1, 2, 3]"
    assert sorted(c.tags["cifarctl.trial_key"] for c in children) == sorted(
        t.key for t in plan.trials)
    for child in children:
        assert child.tags["mlflow.parentRunId"] == parent.run_id
        assert child.status == "FINISHED"
        assert child.params["run.seed"] == str(json.loads(
            child.tags["cifarctl.trial_overrides"])["run.seed"])
        for metric in ["train_loss", "val_acc", "test_acc", "lr", *PER_CLASS]:
            assert steps_of(child.run_id, metric) == [0, 1], metric
        assert "test_acc_at_best" in child.metrics and "best_val_acc" in child.metrics
        assert (Path("checkpoints") / child.run_id / "last.pt").is_file()


@pytest.mark.slow
def test_a_failing_trial_does_not_stop_the_others_and_is_retried_in_its_own_run(
        mlflow_store, data_home, sweep_dataset, tmp_path):
    """The failure shows only at run time (a learning rate that sends the loss to NaN; what
    can be checked before, like a dataset path, is: see the preflight tests)."""
    spec = write_spec(tmp_path, sweep_dataset, grid={"seed": [0, 1]},
                      include=[{"optim.lr": 1e30, "seed": 5}])
    result = sweep_cli(str(spec), "--workers", "2")
    assert result.exit_code == 1, result.output
    assert "2 ok, 1 failed" in result.output
    assert "training loss became NaN/inf" in result.output  # the reason, on its row
    (parent,), children = runs_of("tiny")
    assert parent.status == "FAILED" and parent.tags["trials_failed"] == "1"
    assert sorted(c.status for c in children) == ["FAILED", "FINISHED", "FINISHED"]
    failed = next(c for c in children if c.status == "FAILED")

    again = sweep_cli(str(spec), "--workers", "2")
    assert again.exit_code == 1, again.output
    assert "skipping 2 of 3" in again.output and "1 failed, 2 skipped" in again.output
    (parent,), children = runs_of("tiny")
    assert parent.tags["trials_skipped"] == "2" and parent.tags["trials_finished"] == "2"
    assert len(children) == 3  # the retry ran in the failed trial's own run
    assert failed.run_id in {c.run_id for c in children}


@pytest.mark.slow
def test_fail_fast_stops_at_the_first_failure(mlflow_store, data_home, sweep_dataset, tmp_path,
                                              monkeypatch):
    """Also the spawned workers' path (no fork server: CIFARCTL_WORKER_START=spawn, as on a
    platform without one); the other real sweeps here fork theirs from the server."""
    monkeypatch.setenv("CIFARCTL_WORKER_START", "spawn")
    spec = write_spec(tmp_path, sweep_dataset,
                      grid={"optim.lr": [1e30, 0.05], "seed": [0, 1]})
    result = sweep_cli(str(spec), "--fail-fast")
    assert result.exit_code == 1, result.output
    assert "--fail-fast: trial" in result.output and "1 failed, 3 not run" in result.output
    _, children = runs_of("tiny")
    assert [c.status for c in children] == ["FAILED"]


def _start(spec: Path, *extra: str) -> subprocess.Popen:
    """The sweep as a user starts it, in its own process group (a terminal's job)."""
    cmd = [sys.executable, "-m", "cifarctl", "sweep", str(spec), "--workers", "2", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            start_new_session=True)


def _interrupt_when(proc: subprocess.Popen, send, ready) -> tuple[list[int], str]:
    """Read the plain progress lines until `ready(lines)`, then `send()`; return the
    workers' pids and everything the sweep printed."""
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        if ready(lines):
            send()
            break
    else:
        pytest.fail("the sweep ended before it could be interrupted:\n" + "".join(lines))
    out, err = proc.communicate(timeout=240)
    pids = [int(line.split("(pid ")[1].split(",")[0]) for line in lines if "(pid " in line]
    return pids, "".join(lines) + err + out


def _gone(pid: int, within: float = 60.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _epoch_lines(lines: list[str], key: str) -> int:
    return sum(f"] {key} epoch " in line for line in lines)


@pytest.mark.slow
def test_kill_midway_and_rerun_ends_with_every_trial_finished_once(
        mlflow_store, data_home, sweep_dataset, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it; the sweep also
    forwards SIGTERM), then SIGKILL of the sweep alone (its workers must not outlive it),
    then a run to the end."""
    long = 10  # epochs: enough that the last trial is still running at each interruption
    spec = write_spec(tmp_path, sweep_dataset, epochs=long,
                      include=[{"seed": 0, "optim.epochs": 1}, {"seed": 1}, {"seed": 2}])
    keys = [t.key for t in expand(load_spec(spec)).trials]

    # 1. Ctrl-C once the short trial is done and the last one has an epoch behind it
    proc = _start(spec)
    pids, out = _interrupt_when(proc, lambda: os.killpg(proc.pid, signal.SIGINT), lambda lines: (
        any(f"{keys[0]} ok" in line for line in lines) and _epoch_lines(lines, keys[2]) >= 1))
    assert proc.returncode == 130, out
    assert "SIGINT: stopping the running trials" in out and f"{keys[2]} killed: " in out
    assert "Traceback" not in out
    assert len(pids) == 3 and all(_gone(pid) for pid in pids)
    (parent,), children = runs_of("tiny")
    assert parent.status == "KILLED"
    status = {c.tags["cifarctl.trial_key"]: c.status for c in children}
    assert status[keys[0]] == "FINISHED" and status[keys[2]] == "KILLED"
    assert status[keys[1]] in ("FINISHED", "KILLED")  # it may have ended before Ctrl-C

    # 2. SIGKILL: the sweep cannot forward anything; its workers notice and stop themselves
    proc = _start(spec)
    pids, out = _interrupt_when(proc, proc.kill, lambda lines: _epoch_lines(lines, keys[2]) >= 1)
    assert proc.returncode == -signal.SIGKILL
    assert "skipping 1 of 3" in out or "skipping 2 of 3" in out
    assert pids and all(_gone(pid) for pid in pids), out
    assert {c.status for c in runs_of("tiny")[1]} == {"FINISHED", "KILLED"}

    # 3. the rest, to the end: resumed in the same runs, never restarted
    proc = _start(spec, "-q")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    (parent,), children = runs_of("tiny")
    assert parent.status == "FINISHED"
    assert sorted(c.tags["cifarctl.trial_key"] for c in children) == sorted(keys)
    for child in children:
        assert child.status == "FINISHED"
        epochs = 1 if child.tags["cifarctl.trial_key"] == keys[0] else long
        assert steps_of(child.run_id, "test_acc") == list(range(epochs))


def _children_of(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_while_the_fork_server_imports_ends_the_sweep_cleanly(
        mlflow_store, data_home, sweep_dataset, tmp_path, signum):
    """The fork server imports torch and MLflow for seconds while the first worker waits to
    start: a Ctrl-C to the process group then must neither kill it with a traceback nor leave
    runs RUNNING. The sweep stops, starts nothing more, and every run it made ends KILLED. A
    SIGTERM to the group does kill the server (only SIGINT is ignored): the group that could
    not start is KILLED too, not FAILED."""
    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("finds the fork server through /proc/PID/task/TID/children (Linux)")
    spec = write_spec(tmp_path, sweep_dataset, grid={"seed": [0, 1, 2]})
    proc = _start(spec, "--workers", "1")
    deadline = time.monotonic() + 60
    while not (any("forkserver" in Path(f"/proc/{c}/cmdline").read_text(errors="replace")
                   for c in _children_of(proc.pid)) and runs_of("tiny")[1]):
        assert time.monotonic() < deadline and proc.poll() is None, "no fork server or run"
        time.sleep(0.05)
    os.killpg(proc.pid, signum)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err
    assert f"{signal.Signals(signum).name}: stopping the running trials" in err
    (parent,), children = runs_of("tiny")
    assert parent.status == "KILLED"
    assert len(children) == 1 and children[0].status == "KILLED"  # the others never began


@pytest.mark.slow
def test_an_interrupted_fused_group_resumes_fused_on_the_rerun(
        mlflow_store, data_home, sweep_dataset, tmp_path):
    """Ctrl-C stops a fused group's members at one (epoch, step); the rerun packs them into
    one fused group again (not one after the other) and each ends FINISHED in its own run
    with every epoch logged once."""
    epochs = 8
    spec = write_spec(tmp_path, sweep_dataset, epochs=epochs, grid={"seed": [0, 1, 2]})
    keys = [t.key for t in expand(load_spec(spec)).trials]
    proc = _start(spec, "--fuse", "3")
    _, out = _interrupt_when(proc, lambda: os.killpg(proc.pid, signal.SIGINT),
                             lambda lines: _epoch_lines(lines, keys[0]) >= 1)
    assert proc.returncode == 130, out
    _, children = runs_of("tiny")
    assert {c.status for c in children} == {"KILLED"} and len(children) == 3
    assert len({c.tags["fused_group"] for c in children}) == 1

    proc = _start(spec, "--fuse", "3")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert "resuming 3 fused runs at epoch" in err, err
    assert "started (pid" not in err.split("resuming 3 fused runs")[1]  # no worker after it
    _, children = runs_of("tiny")
    resumed = {c.tags["cifarctl.resumed_epoch"] for c in children}
    assert len(resumed) == 1 and 0 < int(resumed.pop()) < epochs
    for child in children:
        assert child.status == "FINISHED"
        assert steps_of(child.run_id, "test_acc") == list(range(epochs))


@pytest.mark.slow
@pytest.mark.xdist_group("cluster")  # one Ray at a time on this machine (test_cluster_setup)
def test_ray_backend_runs_the_same_tiny_sweep_locally(
        mlflow_store, data_home, sweep_dataset, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install "
                                            "'cifarctl[ray]'")
    spec = write_spec(tmp_path, sweep_dataset, grid={"seed": [0, 1]})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = sweep_cli(str(spec), "--backend", "ray", "--cpus-per-trial", "1")
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    assert "2 ok" in result.output
    (parent,), children = runs_of("tiny")
    assert parent.status == "FINISHED"
    assert len(children) == 2
    for child in children:
        assert child.status == "FINISHED"
        assert child.tags["mlflow.parentRunId"] == parent.run_id
        assert steps_of(child.run_id, "test_acc") == [0, 1]
