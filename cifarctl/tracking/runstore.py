"""The read side of an MLflow store: the one way `report`, `eval`, `sweep` and `ui` see runs.

    store = open_store("sqlite:///mlflow.db")            # connected; RunStore(uri) is lazy
    run = store.get_run(run_id)                          # a StoredRun: plain values
    store.select(["lt100"]).runs                         # a report's runs, oldest first
    store.children(parent_id)                            # a sweep's trials
    store.metric_history(run.run_id, "test_acc")         # [(step, value), ...]
    store.download_artifact(run.run_id, "checkpoints/best.pt", "checkpoints/" + run.run_id)

Runs come back as `StoredRun`s, never MLflow entities. `select` without a filter reads a
sqlite store's tables directly (`sqlite_reader`: ~0.1 s for 500 runs against ~4.5 s through
MLflow), else MLflow's API: both give the same runs in the same order. MLflow is loaded only
when a call needs it, so the fast path never does. Writes a reader needs (a status, tags,
eval's metrics on an existing run) go through MLflow here too; training writes through a
`Tracker`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cifarctl.errors import first_line
from cifarctl.names import PARENT_TAG
from cifarctl.tracking.base import check_status
from cifarctl.tracking.retry import call_with_retry
from cifarctl.tracking.store import resolve_tracking_uri, sqlite_path
from cifarctl.tracking.stored import (
    InvalidFilter,
    Selection,
    StoredRun,
    choose_experiments,
    in_order,
    parent_experiment,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from cifarctl.tracking.histories import Histories
    from cifarctl.tracking.mlflow_tracker import MlflowTracker

PAGE_SIZE = 50_000  # MLflow's largest allowed page (SEARCH_MAX_RESULTS_THRESHOLD)
Reader = Literal["auto", "mlflow", "sqlite"]


def _stored(run: Any) -> StoredRun:  # an MLflow `Run`
    info, data = run.info, run.data
    return StoredRun(info.run_id, info.experiment_id, info.status, info.run_name,
                     info.start_time, info.artifact_uri, dict(data.params),
                     dict(data.metrics), dict(data.tags))


class RunStore:
    """One MLflow store, read by run id, experiment and filter. See the module docstring."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.uri = resolve_tracking_uri(tracking_uri)
        self._client: MlflowClient | None = None

    def connect(self) -> MlflowClient:
        """The MLflow client, opened on first use (UsageError if the store cannot be)."""
        if self._client is None:
            from cifarctl.tracking.mlflow_tracker import connect

            self._client = connect(self.uri)
        return self._client

    # ---- runs ------------------------------------------------------------------------

    def get_run(self, run_id: str, what: str = "run") -> StoredRun:
        """The run `run_id`; UsageError if the store has none or it is deleted."""
        from cifarctl.tracking.mlflow_tracker import get_run

        return _stored(get_run(self.connect(), run_id, what))

    def experiments(self) -> dict[str, str]:
        """Active experiments: name -> id."""
        from mlflow.entities import ViewType

        found = call_with_retry(self.connect().search_experiments, view_type=ViewType.ACTIVE_ONLY)
        return {e.name: e.experiment_id for e in found}

    def find_runs(self, experiment: str, filter_string: str = "",
                  order_by: Sequence[str] | None = None) -> list[StoredRun]:
        """Every active run of experiment `experiment` (by name; none if there is no such
        experiment) matching `filter_string`, in MLflow's order unless `order_by`."""
        found = call_with_retry(self.connect().get_experiment_by_name, experiment)
        return [] if found is None else self._search([found.experiment_id], filter_string,
                                                     order_by)

    def children(self, parent_id: str, experiment: str | None = None,
                 filter_string: str = "") -> list[StoredRun]:
        """The active runs nested under `parent_id` (tag `mlflow.parentRunId`), oldest first,
        in `experiment` (by name; default: the parent's own experiment)."""
        filters = " and ".join([f"tags.{PARENT_TAG} = '{parent_id}'",
                                *([filter_string] if filter_string else [])])
        if experiment is not None:
            return in_order(self.find_runs(experiment, filters))
        experiment_id = self.get_run(parent_id, what="parent run").experiment_id
        return in_order(self._search([experiment_id], filters))

    def select(self, experiments: Sequence[str] | None = None, *, parent: str | None = None,
               filter_string: str = "", reader: Reader = "auto") -> Selection:
        """The active runs of `experiments` (names; default all) matching `filter_string`,
        or the children of `parent` in its experiment: what `cifarctl report` reads.

        UsageError for an unknown experiment or parent; `InvalidFilter` for a filter the
        store refuses. `reader`: "auto" (sqlite tables when the store is a sqlite file and
        there is no filter, else MLflow), or "mlflow" / "sqlite" to force one (tests,
        benchmarks; "sqlite" raises `sqlite_reader.UseMlflow` where it does not apply).
        """
        filter_string = filter_string.strip()
        db = sqlite_path(self.uri)
        if reader != "mlflow" and db is not None and db.is_file() and not filter_string:
            from cifarctl.tracking import sqlite_reader

            try:
                return sqlite_reader.select(db, self.uri, experiments, parent)
            except sqlite_reader.UseMlflow:
                if reader == "sqlite":
                    raise
        active = self.experiments()
        names = choose_experiments(active, experiments, self.uri)
        filters = [filter_string] if filter_string else []
        if parent is not None:
            experiment_id = self.get_run(parent, what="parent run").experiment_id
            names = parent_experiment(names, active, experiment_id, parent, experiments)
            filters.append(f"tags.{PARENT_TAG} = '{parent}'")
        runs = self._search(list(names), " and ".join(filters)) if names else []
        return Selection(in_order(runs), names)

    def _search(self, experiment_ids: list[str], filter_string: str,
                order_by: Sequence[str] | None = None) -> list[StoredRun]:
        """Every page of MLflow's search; InvalidFilter for a filter it refuses."""
        from mlflow.entities import ViewType
        from mlflow.exceptions import MlflowException

        client = self.connect()
        runs: list[StoredRun] = []
        token = None
        while True:
            try:
                page = call_with_retry(client.search_runs, experiment_ids, filter_string,
                                       run_view_type=ViewType.ACTIVE_ONLY, max_results=PAGE_SIZE,
                                       order_by=list(order_by or ()), page_token=token)
            except MlflowException as err:
                if err.error_code != "INVALID_PARAMETER_VALUE":
                    raise
                raise InvalidFilter(filter_string, first_line(err)) from None  # one line for users
            runs.extend(_stored(run) for run in page)
            token = page.token
            if not token:
                return runs

    # ---- histories and artifacts -------------------------------------------------------

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """Every logged `(step, value)` of metric `key` of a run, as MLflow keeps them."""
        history = call_with_retry(self.connect().get_metric_history, run_id, key)
        return [(m.step, m.value) for m in history]

    def metric_histories(self, run_ids: Sequence[str], keys: Sequence[str]) -> Histories:
        """{run id: {key: [(step, value), ...]}} for many runs at once, one value per step
        (the last logged), in as few reads as the store allows (`histories`)."""
        from cifarctl.tracking.histories import metric_histories

        return metric_histories(self.uri, run_ids, keys, self.metric_history)

    def download_artifact(self, run_id: str, artifact_path: str,
                          dst_dir: Path | str) -> Path | None:
        from cifarctl.tracking.mlflow_tracker import download_artifact

        return download_artifact(self.connect(), run_id, artifact_path, dst_dir)

    def list_artifacts(self, run_id: str, folder: str | None = None) -> set[str]:
        """Paths of a run's artifacts in `folder` (`checkpoints/best.pt`, ...); empty when
        the artifact store cannot be read."""
        from mlflow.exceptions import MlflowException

        try:
            return {a.path for a in self.connect().list_artifacts(run_id, folder)}
        except (MlflowException, OSError):
            return set()

    # ---- what readers write --------------------------------------------------------------

    def set_status(self, run_id: str, status: str) -> None:
        """End a run as FINISHED, FAILED or KILLED (one whose writer is gone)."""
        call_with_retry(self.connect().set_terminated, run_id, check_status(status))

    def delete_run(self, run_id: str) -> None:
        """Move a run to MLflow's trash (a sweep parent created twice at once: `sweep.store`)."""
        call_with_retry(self.connect().delete_run, run_id)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags on a run, as strings; a tag may be overwritten."""
        for key, value in tags.items():
            call_with_retry(self.connect().set_tag, run_id, key, str(value))

    def tracker(self, run_id: str) -> MlflowTracker:
        """A tracker writing to an existing run without reopening it: its status, end time
        and name stay as they are (`eval` adds metrics and files to a finished run)."""
        from cifarctl.tracking.mlflow_tracker import MlflowTracker, get_run

        return MlflowTracker(self.connect(), get_run(self.connect(), run_id))


def open_store(tracking_uri: str | None = None) -> RunStore:
    """A `RunStore` on the resolved store, connected now: UsageError here, not at the first
    read, for a server that does not answer or a file that is no store."""
    store = RunStore(tracking_uri)
    store.connect()
    return store
