"""Two drivers of one sweep (two terminals, two machines of a cluster): one trains it, the
other refuses in one line, and no trial gets a second run (`cifarctl.sweep.lease`).

A driver on another machine is its tags in the store, which is all a driver here sees of it:
its heartbeat names its host.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sweep_run import runs_of, sweep_dataset, write_spec  # noqa: F401  (a fixture)

from cifarctl.errors import UsageError
from cifarctl.names import SWEEP_HEARTBEAT_TAG
from cifarctl.sweep.spec import expand, load_spec

REFUSAL = "error: this sweep is already running (process "


def _plan(tmp_path: Path):
    return expand(load_spec(write_spec(tmp_path, tmp_path, grid={"seed": [0]})))


def test_a_live_driver_on_another_machine_is_refused_and_a_dead_one_taken_over(
        mlflow_store, tmp_path):
    from cifarctl.sweep.lease import STALE_S
    from cifarctl.sweep.store import open_sweep
    from cifarctl.tracking.runstore import open_store

    plan, store = _plan(tmp_path), open_store()
    first = open_sweep(store, plan)
    store.set_tags(first.parent_id, {SWEEP_HEARTBEAT_TAG: f"gpu-7:4242 at {time.time():.0f}"})
    with pytest.raises(UsageError) as err:
        open_sweep(store, plan)
    assert str(err.value).startswith(f"this sweep is already running (process 4242 on gpu-7, "
                                     f"parent run {first.parent_id}, its heartbeat ")
    assert "`kill 4242` on gpu-7" in str(err.value) and "\n" not in str(err.value)
    dead = time.time() - STALE_S - 5  # its last heartbeat: a driver that died
    store.set_tags(first.parent_id, {SWEEP_HEARTBEAT_TAG: f"gpu-7:4242 at {dead:.0f}"})
    assert open_sweep(store, plan).parent_id == first.parent_id
    claims = {k: v for k, v in store.get_run(first.parent_id).params.items()
              if k.startswith("sweep.driver.")}
    assert sorted(claims) == ["sweep.driver.1", "sweep.driver.2"]  # one per driver that held it


def test_a_trial_running_under_a_live_driver_is_not_started_again(mlflow_store, tmp_path):
    """A driver that lost its claim (paused past the heartbeat's age, then back) still drives
    its trials until its next beat: their runs carry its heartbeat, and the new driver leaves
    them "not run"."""
    from cifarctl.sweep.lease import held_elsewhere
    from cifarctl.sweep.store import create_child, open_sweep
    from cifarctl.tracking.runstore import open_store

    plan, store = _plan(tmp_path), open_store()
    runs = open_sweep(store, plan)
    child = create_child(store, plan, plan.trials[0], runs.parent_id)
    assert held_elsewhere(store.get_run(child)) is None  # this driver's own
    store.set_tags(child, {SWEEP_HEARTBEAT_TAG: f"gpu-7:4242 at {time.time():.0f}"})
    assert held_elsewhere(store.get_run(child)).startswith(
        f"its trial is already running (process 4242 on gpu-7, run {child}")


def test_a_driver_taken_over_stops_its_sweep_and_beats_for_its_running_trials(
        mlflow_store, tmp_path):
    from cifarctl.sweep.lease import Heartbeat, driver_id
    from cifarctl.sweep.state import SweepOutcome, TrialState
    from cifarctl.sweep.store import create_child, open_sweep
    from cifarctl.tracking.runstore import open_store
    from cifarctl.training.signals import StopFlag

    plan, store = _plan(tmp_path), open_store()
    runs = open_sweep(store, plan)
    state = TrialState(plan.trials[0], status="running")
    state.run_id = create_child(store, plan, plan.trials[0], runs.parent_id)
    store.set_tags(state.run_id, {SWEEP_HEARTBEAT_TAG: "earlier:1 at 0"})
    outcome, stop = SweepOutcome(plan, runs.parent_id, [state]), StopFlag()
    with Heartbeat(store, outcome, stop, every=0.1) as beat:
        deadline = time.monotonic() + 30
        while store.get_run(state.run_id).tags[SWEEP_HEARTBEAT_TAG].startswith("earlier"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not stop.requested and beat.lost is None
        assert store.get_run(runs.parent_id).params["sweep.driver.1"] == driver_id()
        store.tracker(runs.parent_id).log_params({"sweep.driver.2": "gpu-7:4242/beef"})
        while not stop.requested:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert beat.lost == "gpu-7:4242"
    assert stop.signal_name == "another sweep driver (gpu-7:4242) took this sweep over"


def _driver(spec: Path, host: str | None = None) -> subprocess.Popen:
    """`cifarctl sweep spec -q`; with `host`, as on another machine of that name (its own
    host name, through a UTS namespace; the same store and process table)."""
    command = [sys.executable, "-m", "cifarctl", "sweep", str(spec), "-q"]
    if host is not None:
        command = ["unshare", "--uts", "--user", "--map-root-user", "sh", "-c",
                   f'hostname {host} && exec "$@"', "sh", *command]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _race(spec: Path) -> tuple[str, str]:
    """Two drivers of `spec` started at the same moment: (the refusal, the other's output);
    every trial FINISHED once, under the one parent."""
    drivers = [_driver(spec), _driver(spec)]
    outs = [d.communicate(timeout=300) for d in drivers]
    codes = [d.returncode for d in drivers]
    assert sorted(codes) == [0, 2], outs
    refused, ran = (outs[0], outs[1]) if codes[0] == 2 else (outs[1], outs[0])
    (parent,), children = runs_of("tiny")
    keys = [c.tags["cifarctl.trial_key"] for c in children]
    assert sorted(keys) == sorted(t.key for t in expand(load_spec(spec)).trials), keys
    assert {c.status for c in children} == {"FINISHED"} and parent.status == "FINISHED"
    assert refused[0] == "" and refused[1].count("\n") == 1, refused
    assert refused[1].startswith(REFUSAL), refused
    # refused on the other's heartbeat (its age named), or on its claim of the same n made
    # at the same moment (no heartbeat read yet): both name the parent the winner kept
    assert f"parent run {parent.run_id}" in refused[1], refused
    return refused[1], ran[0] + ran[1]


@pytest.mark.slow
def test_a_second_driver_on_another_machine_is_refused_while_the_first_lives(
        mlflow_store, data_home, sweep_dataset, tmp_path):  # noqa: F811
    """The README's "from any machine of the cluster": the first driver's process is out of
    the second's sight, its heartbeat is not (the owner's pid alone let both train)."""
    if subprocess.run(["unshare", "--uts", "--user", "--map-root-user", "true"],
                      capture_output=True).returncode != 0:
        pytest.skip("needs `unshare` with user namespaces for a second host name")
    spec = write_spec(tmp_path, sweep_dataset, grid={"seed": [0, 1]}, epochs=6)
    first = _driver(spec)
    deadline = time.monotonic() + 120
    while not any(c.status == "RUNNING" for c in runs_of("tiny")[1]):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.2)
    second = _driver(spec, host="other-node")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 2 and out == "", out + err
    assert err.startswith(f"error: this sweep is already running (process {first.pid} on "
                          f"{socket.gethostname()}, parent run "), err
    assert err.count("\n") == 1
    assert first.wait(300) == 0, first.communicate()
    (parent,), children = runs_of("tiny")
    assert parent.status == "FINISHED" and [c.status for c in children] == ["FINISHED"] * 2


@pytest.mark.slow
def test_two_drivers_started_at_once_train_every_trial_once(
        mlflow_store, data_home, sweep_dataset, tmp_path):  # noqa: F811
    """First both create a parent at once (the oldest stays, the other driver deletes its own
    and refuses); then both find the killed sweep's parent and claim it at once (one claim
    stands)."""
    from cifarctl.tracking.runstore import open_store

    spec = write_spec(tmp_path, sweep_dataset, grid={"seed": [0, 1]}, epochs=4)
    _race(spec)

    store = open_store()  # as a sweep killed before any trial ended leaves it
    (parent,), children = runs_of("tiny")
    for child in children:
        store.connect().delete_run(child.run_id)
    store.set_status(parent.run_id, "KILLED")
    _, output = _race(spec)
    assert "skipping" not in output
