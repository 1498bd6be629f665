"""The Ray executor: each group of trials is a Ray core task on a local or remote cluster.

    executor = RayExecutor("ray://head:10001", "http://mlflow:5000", gpus_per_trial=0.25)

A task runs `worker.ray_main`, the same code a local worker process runs, and logs to the
same tracking URI. `num_gpus` may be fractional, so several small trials share one GPU
(Ray sets CUDA_VISIBLE_DEVICES for each task). Progress comes back through a Ray queue (an
actor), results as the tasks' return values. Stopping cancels the tasks: Ray delivers that
as SIGINT to the task, which `train` takes as a request to checkpoint and end KILLED.

Ray is optional (`pip install 'cifarctl[ray]'`). Every node must import the same cifarctl,
find the datasets the trials name, and reach the tracking store: a local sqlite file works
only when the whole cluster is this machine; otherwise run an MLflow server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cifarctl.errors import UsageError
from cifarctl.sweep.worker import TrialTask, ray_main
from cifarctl.tracking.store import sqlite_path

INSTALL_HINT = "pip install 'cifarctl[ray]'"


def import_ray() -> Any:
    """The `ray` module, or a UsageError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"--backend ray needs Ray, which is not installed: "
                         f"{INSTALL_HINT}") from None
    return ray


def store_warning(address: str | None, tracking_uri: str) -> str | None:
    """The warning for a cluster that may not reach a local tracking store, if one is due."""
    if address in (None, "", "local") or tracking_uri.startswith(("http://", "https://")):
        return None
    where = sqlite_path(tracking_uri) or tracking_uri
    return (f"warning: trials on the Ray cluster at {address} log to {where}, a file on this "
            f"machine: every node must reach it. On a multi-node cluster run an MLflow server "
            f"(`mlflow server --backend-store-uri sqlite:///mlflow.db --host 0.0.0.0`) and "
            f"pass --tracking-uri http://THIS-HOST:5000")


class RayExecutor:
    """Up to `workers` Ray tasks in flight (default: as many as there are trials)."""

    def __init__(self, address: str | None, tracking_uri: str, *, workers: int | None,
                 gpus_per_trial: float | None, cpus_per_trial: float,
                 message: Callable[[str], None]) -> None:
        ray = self.ray = import_ray()
        from ray.util.queue import Queue

        warning = store_warning(address, tracking_uri)
        if warning:
            message(warning)
        self.owned = not ray.is_initialized()  # we started Ray, so we stop it
        if self.owned:
            local = address in (None, "", "local")
            ray.init(address=None if local else address, include_dashboard=False,
                     log_to_driver=False, logging_level="ERROR")
        if gpus_per_trial is None:  # a whole GPU per trial where there are GPUs
            gpus_per_trial = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        self.queue = Queue()
        self.remote = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial,
                                 max_retries=0)(ray_main)
        self.workers = workers
        self.inflight: dict[Any, list[TrialTask]] = {}  # ObjectRef -> tasks

    def free(self) -> int:
        return 1_000_000 if self.workers is None else self.workers - len(self.inflight)

    def busy(self) -> int:
        return len(self.inflight)

    def submit(self, tasks: list[TrialTask]) -> None:
        self.inflight[self.remote.remote(tasks, self.queue)] = tasks

    def poll(self, timeout: float) -> list[tuple[str, str, dict[str, Any]]]:
        from ray.util.queue import Empty

        events: list[tuple[str, str, dict[str, Any]]] = []
        try:
            events.append(self.queue.get(timeout=timeout))
            events += self.queue.get_nowait_batch(self.queue.qsize())
        except Empty:
            pass
        done, _ = self.ray.wait(list(self.inflight), num_returns=len(self.inflight),
                                timeout=0) if self.inflight else ([], [])
        for ref in done:
            tasks = self.inflight.pop(ref)
            try:
                self.ray.get(ref)
                error = "the Ray task ended without a result"
            except Exception as err:  # noqa: BLE001 - a crashed or cancelled task
                error = f"Ray task failed: {str(err).strip().splitlines()[0]}"
            events += self._drain_late()
            events += [("exit", t.key, {"error": error}) for t in tasks]
        return events

    def _drain_late(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Events a finished task queued just before its return value arrived."""
        size = self.queue.qsize()
        return self.queue.get_nowait_batch(size) if size else []

    def stop(self) -> None:
        for ref in self.inflight:
            self.ray.cancel(ref)  # SIGINT in the task: checkpoint, KILLED

    def kill(self) -> None:
        for ref in self.inflight:
            self.ray.cancel(ref, force=True)

    def close(self) -> None:
        self.kill()
        self.inflight.clear()
        self.queue.shutdown()
        if self.owned:
            self.ray.shutdown()
