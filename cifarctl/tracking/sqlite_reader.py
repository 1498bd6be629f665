"""MLflow's sqlite tables read directly and read-only: the fast path of `RunStore.select`.

    selection = select(Path("/p/mlflow.db"), "sqlite:////p/mlflow.db", ["lt100"], None)
    # raises UseMlflow where it does not apply: RunStore then asks MLflow

Why: building MLflow's ORM objects for 500 runs takes ~1.5 s, and importing and opening
MLflow ~3 s more on a 2-core machine; reading the same rows from `runs`, `params`, `tags`,
`latest_metrics` (the table MLflow's search reads metrics from) and `experiments` takes
~0.1 s (issue 6: a report over 500 runs in under 3 s). A schema it does not know, or
experiments in MLflow workspaces (MLflow decides which a user sees), send the caller to
MLflow; tests check both readers return the same runs. Nothing outside `cifarctl.tracking`
reads MLflow's tables: they are MLflow's private business, and only this module knows them.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from cifarctl.names import PARENT_TAG
from cifarctl.tracking.stored import (
    Selection,
    StoredRun,
    choose_experiments,
    in_order,
    parent_experiment,
)

BUSY_TIMEOUT_S = 20.0  # as MLflow's own: wait for a writer (a sweep worker) to commit


class UseMlflow(Exception):
    """The fast path does not apply to this store; read it through MLflow."""


# The tables and columns read here (MLflow 2.x-3.x); anything else is a schema we do not know.
SCHEMA = {"experiments": {"experiment_id", "name", "lifecycle_stage"},
          "runs": {"run_uuid", "name", "status", "start_time", "lifecycle_stage",
                   "artifact_uri", "experiment_id"},
          "params": {"key", "value", "run_uuid"}, "tags": {"key", "value", "run_uuid"},
          "latest_metrics": {"key", "value", "is_nan", "run_uuid"}}


@contextlib.contextmanager
def _reading(db: Path, timeout: float = BUSY_TIMEOUT_S) -> Iterator[sqlite3.Connection]:
    """A connection to `db` that never creates or changes it (mode=ro); any sqlite error
    becomes UseMlflow."""
    uri = f"{db.resolve().as_uri()}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=timeout)) as con:
            yield con
    except sqlite3.Error as err:
        raise UseMlflow from err


def _has_columns(con: sqlite3.Connection, table: str, columns: set[str]) -> bool:
    return columns <= {row[1] for row in con.execute(f"PRAGMA table_info({table})")}


def rows(db: Path, query: str) -> list[tuple] | None:
    """Rows of a read-only query on an SQLite file; None if it cannot be read."""
    try:
        with _reading(db, timeout=5.0) as con:
            return con.execute(query).fetchall()
    except UseMlflow:
        return None


def experiment_names(db: Path) -> list[str] | None:
    """Names of the store's active experiments, sorted; None if the file cannot be read."""
    found = rows(db, "SELECT name FROM experiments WHERE lifecycle_stage = 'active'")
    return None if found is None else sorted(row[0] for row in found)


def _check_schema(con: sqlite3.Connection) -> None:
    if not all(_has_columns(con, table, columns) for table, columns in SCHEMA.items()):
        raise UseMlflow
    if _has_columns(con, "experiments", {"workspace"}) and con.execute(
            "SELECT 1 FROM experiments WHERE workspace IS NOT NULL AND "
            "workspace != 'default' LIMIT 1").fetchone():
        raise UseMlflow


def select(db: Path, uri: str, experiments: Sequence[str] | None,
           parent: str | None) -> Selection:
    """What `RunStore.select` returns without a filter, read from the tables; UseMlflow when
    the tables are not ones this reader knows, or the parent run is not there."""
    with _reading(db) as con:
        _check_schema(con)
        active = {name: str(i) for i, name in con.execute(
            "SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active'")}
        names = choose_experiments(active, experiments, uri)
        if parent is not None:
            found = con.execute("SELECT experiment_id FROM runs WHERE run_uuid = ? AND "
                                "lifecycle_stage = 'active'", (parent,)).fetchone()
            if found is None:
                raise UseMlflow  # MLflow's reader says what is wrong with the id
            names = parent_experiment(names, active, str(found[0]), parent, experiments)
        return Selection(_runs(con, list(names), parent), names)


def _runs(con: sqlite3.Connection, ids: list[str], parent: str | None) -> list[StoredRun]:
    """The active runs of experiments `ids` (the children of `parent` when given)."""
    active = (f"FROM runs WHERE lifecycle_stage = 'active' AND experiment_id IN "
              f"({','.join('?' * len(ids))})")
    selected = f"SELECT run_uuid {active}"
    runs: dict[str, StoredRun] = {}
    for run_id, name, status, start, artifact_uri, experiment_id in con.execute(
            f"SELECT run_uuid, name, status, start_time, artifact_uri, experiment_id {active}",
            ids):
        runs[run_id] = StoredRun(run_id, str(experiment_id), status, name, start, artifact_uri)
    for table in ("params", "tags"):
        for run_id, key, value in con.execute(
                f"SELECT run_uuid, key, value FROM {table} WHERE run_uuid IN ({selected})", ids):
            getattr(runs[run_id], table)[key] = value
    for run_id, key, value, is_nan in con.execute(
            f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN "
            f"({selected})", ids):
        runs[run_id].metrics[key] = math.nan if is_nan else float(value)
    found = runs.values()
    if parent is not None:
        found = [r for r in found if r.tags.get(PARENT_TAG) == parent]
    return in_order(found)


def metric_points(db: Path, run_ids: Sequence[str], keys: Sequence[str]
                  ) -> list[tuple[str, str, int, float]]:
    """Every logged point `(run id, key, step, value)` of metrics `keys` of the runs, in the
    order they were written; UseMlflow where the table is not one we know."""
    points: list[tuple[str, str, int, float]] = []
    with _reading(db) as con:
        if not _has_columns(con, "metrics", {"run_uuid", "key", "step", "value", "is_nan"}):
            raise UseMlflow
        key_marks = ",".join("?" * len(keys))
        for start in range(0, len(run_ids), 500):  # SQLite's bound-variable limit
            chunk = list(run_ids[start:start + 500])
            points += [(r, k, int(s), math.nan if nan else float(v))
                       for r, k, s, v, nan in con.execute(
                           f"SELECT run_uuid, key, step, value, is_nan FROM metrics "
                           f"WHERE key IN ({key_marks}) AND run_uuid IN "
                           f"({','.join('?' * len(chunk))}) ORDER BY rowid",
                           [*keys, *chunk])]
    return points
