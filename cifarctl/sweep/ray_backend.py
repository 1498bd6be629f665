"""The Ray executor: each group of trials is a Ray core task on a local or remote cluster.

    executor = RayExecutor("ray://head:10001", "http://mlflow:5000", gpus_per_trial=0.25, ...)

A task runs `worker.ray_main`, as a local worker process does. `num_gpus` may be fractional
(trials share a GPU). Stopping cancels the tasks: SIGINT in the task, so it checkpoints and
ends KILLED. A task never blocks in `ray.get` (Ray lends a blocked task's CPU away: a 2-CPU
cluster ran three trials at once, issue 20): progress goes to an actor by fire-and-forget
calls (`ActorSink`), results come back as return values. A task whose worker or node dies
runs again (`MAX_RETRIES`) from the checkpoint it uploaded (`TrialTask.follow`).

Every node must import the same cifarctl, find the trials' datasets and reach the tracking
store (a local sqlite file only when the whole cluster is this machine).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cifarctl.errors import UsageError, first_line
from cifarctl.sweep.ray_connect import connect, is_local, task_env
from cifarctl.sweep.worker import Event, TrialTask, ray_main
from cifarctl.tracking.store import is_server, sqlite_path

MAX_RETRIES = 2  # a trial whose node is lost runs again elsewhere, at most this many times


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--backend ray needs Ray, which is not installed: "
                         "pip install 'cifarctl[ray]'") from None
    return ray


def store_warning(address: str | None, tracking_uri: str) -> str | None:
    """The warning for a cluster that may not reach a local tracking store, if one is due."""
    if is_local(address) or is_server(tracking_uri):
        return None
    where = sqlite_path(tracking_uri) or tracking_uri
    return (f"warning: trials on the Ray cluster at {address} log to {where}, a file on this "
            f"machine: every node must reach it. On a multi-node cluster run an MLflow server "
            f"(`mlflow server --backend-store-uri sqlite:///mlflow.db --host 0.0.0.0`) and "
            f"pass --tracking-uri http://THIS-HOST:5000")


class Progress:
    """The actor the tasks' progress events collect in until the sweep takes them."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def put(self, event: Event) -> None:
        self.events.append(event)

    def take(self) -> list[Event]:
        events, self.events = self.events, []
        return events


class ActorSink:
    """A worker's `Sink` on the `Progress` actor: `put` never waits for an answer."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def put(self, item: Event) -> None:
        self.actor.put.remote(item)


class RayExecutor:
    """Up to `workers` Ray tasks in flight (default: as many as there are trials)."""

    def __init__(self, address: str | None, tracking_uri: str, *, workers: int | None,
                 gpus_per_trial: float | None, cpus_per_trial: float,
                 message: Callable[[str], None], log_dir: Path) -> None:
        ray = self.ray = import_ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        env = task_env(tracking_uri)
        self.owned = connect(ray, address, env=env, log_dir=log_dir)  # we started it: we stop it
        warning = store_warning(address, tracking_uri)
        if warning:
            message(warning)
        if gpus_per_trial is None:  # a whole GPU per trial where there are GPUs
            gpus_per_trial = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        # the progress actor, on this node where it can be; restarted elsewhere if its node is
        # lost (the tasks' handles stay valid, their calls are retried)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.progress = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(
            Progress).options(scheduling_strategy=here).remote()
        self.sink = ActorSink(self.progress)
        self.remote = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial,
                                 max_retries=MAX_RETRIES, runtime_env={"env_vars": env})(ray_main)
        self.workers = workers
        self.inflight: dict[Any, list[TrialTask]] = {}  # ObjectRef -> tasks
        self.done: set[str] = set()  # trial keys whose result arrived: later events are stale
        self.sent: dict[str, dict[str, Any]] = {}  # results a task sent before it ended

    def free(self) -> int:
        return 1_000_000 if self.workers is None else self.workers - len(self.inflight)

    def busy(self) -> int:
        return len(self.inflight)

    def submit(self, tasks: list[TrialTask]) -> None:
        submission = uuid.uuid4().hex[:12]  # tells a Ray retry of this task from a rerun
        tasks = [replace(t, submission=submission) for t in tasks]
        self.inflight[self.remote.remote(tasks, self.sink)] = tasks

    def poll(self, timeout: float) -> list[Event]:
        done: list[Any] = []
        if self.inflight:
            done, _ = self.ray.wait(list(self.inflight), num_returns=len(self.inflight),
                                    timeout=timeout)
        else:
            time.sleep(timeout)
        events = self._take()  # after the wait: with what finished tasks sent before they ended
        for ref in done:
            events += self._ended(ref)
        return events

    def _take(self) -> list[Event]:
        """Progress events so far; `result`s are kept aside: a task's return value is its
        result (a retried task's first attempt may have sent one before its node died)."""
        try:
            events = self.ray.get(self.progress.take.remote())
        except Exception:  # noqa: BLE001 - the actor's node is gone: results still come
            return []
        self.sent.update({e[1]: e[2] for e in events if e[0] == "result"})
        return [e for e in events if e[0] != "result" and e[1] not in self.done]

    def _ended(self, ref: Any) -> list[Event]:
        """The `result` events of a finished task (its return value; for a cancelled task,
        what it sent before it ended), else `exit` events."""
        tasks = self.inflight.pop(ref)
        self.done.update(t.key for t in tasks)
        try:
            results = self.ray.get(ref)
        except Exception as err:  # noqa: BLE001 - a crashed, cancelled or lost task
            error = f"Ray task failed: {first_line(err)}"
            return [("result", t.key, self.sent[t.key]) if t.key in self.sent
                    else ("exit", t.key, {"error": error}) for t in tasks]
        return [("result", r["key"], r) for r in results]

    def stop(self) -> None:
        for ref in self.inflight:
            self.ray.cancel(ref)  # SIGINT in the task: checkpoint, KILLED

    def kill(self) -> None:
        for ref in self.inflight:
            self.ray.cancel(ref, force=True)

    def close(self) -> None:
        self.kill()
        self.inflight.clear()
        if self.owned:
            self.ray.shutdown()
        else:  # a Ray instance the caller keeps: leave nothing of ours in it
            self.ray.kill(self.progress)

