"""The runs a report is about, read from the MLflow store into one pandas DataFrame.

    runs = load_runs("sqlite:///mlflow.db", experiments=["lt100"],
                     filter_string="params.loss.name = 'focal'")
    runs.frame["metrics.test_acc_at_best"]      # one row per run, mlflow.search_runs' columns

Columns follow `mlflow.search_runs(output_format="pandas")`: `run_id`, `experiment_id`,
`status`, `params.<key>`, `metrics.<key>` (latest value), `tags.<key>`, plus `experiment`
(its name) and `run_name`. Report runs (tag `cifarctl.kind=report`) never count.

Two readers, one result:
- MLflow: the query `mlflow.search_runs` pages over (`MlflowClient.search_runs`), on the store
  the user named rather than MLflow's process-global tracking URI, 50,000 runs a page. Any
  store, any `--filter`.
- sqlite fast path, for the default store without a filter: the same rows read straight from
  MLflow's tables (`runs`, `params`, `tags`, `latest_metrics` (the table MLflow's search reads
  metrics from), `experiments`), read-only. Building MLflow's ORM objects for 500 runs takes
  ~1.5 s and importing and opening MLflow ~3 s more on a 2-core machine; this takes ~0.1 s
  (issue 6: 500 runs in under 3 s). A schema it does not know, or experiments in MLflow
  workspaces, send it to the MLflow reader; tests check both readers give the same frame.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifarctl.errors import UsageError
from cifarctl.names import KIND_TAG, PARENT_TAG, REPORT_KIND, TEST_ACC_AT_BEST

if TYPE_CHECKING:
    import pandas as pd

PAGE_SIZE = 50_000  # MLflow's largest allowed page (SEARCH_MAX_RESULTS_THRESHOLD)
SUMMARY_METRIC = TEST_ACC_AT_BEST  # a run without it has nothing to report
FILTER_EXAMPLES = ("params.loss.name = 'focal'", "params.data.imbalance = '100.0'",
                   "tags.loss = 'focal' and metrics.test_acc_at_best > 0.6",
                   "attributes.run_name LIKE 'resnet32-%'")
INFO_COLUMNS = ["run_id", "experiment_id", "experiment", "status", "run_name", "start_time",
                "artifact_uri"]


@dataclass
class RunSet:
    """Runs to report on, and the ones left out with the reason (shown to the user)."""

    frame: pd.DataFrame
    experiments: list[str]  # names of the experiments the runs come from
    skipped: list[dict[str, str]] = field(default_factory=list)  # run_id, run_name, reason


def _choose(active: dict[str, str], names: Sequence[str] | None, uri: str) -> dict[str, str]:
    """{experiment id: name} of the named experiments (all of `active` when none named)."""
    if not names:
        return {i: n for n, i in active.items()}
    unknown = [n for n in names if n not in active]
    if unknown:
        known = ", ".join(sorted(active)) or "none"
        raise UsageError(f"unknown experiment {unknown[0]!r} in {uri} (experiments: {known})")
    return {active[n]: n for n in names}


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame.from_records(records)
    return pd.DataFrame(columns=INFO_COLUMNS) if frame.empty else frame


# ---- reader 1: MLflow ----------------------------------------------------------------------

def _search(client: Any, experiment_ids: list[str], filter_string: str) -> list[Any]:
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    from cifarctl.tracking import call_with_retry

    runs: list[Any] = []
    token = None
    while True:
        try:
            page = call_with_retry(client.search_runs, experiment_ids, filter_string,
                                   run_view_type=ViewType.ACTIVE_ONLY, max_results=PAGE_SIZE,
                                   page_token=token)
        except MlflowException as err:
            if err.error_code != "INVALID_PARAMETER_VALUE":
                raise
            first = str(err.message).strip().splitlines()[0]
            raise UsageError(f"invalid --filter {filter_string!r}: {first}; e.g. "
                             f"--filter \"{FILTER_EXAMPLES[0]}\"") from None
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _mlflow_frame(uri: str, experiments: Sequence[str] | None, parent: str | None,
                  filter_string: str) -> tuple[pd.DataFrame, dict[str, str]]:
    from mlflow.entities import ViewType

    from cifarctl.tracking import call_with_retry
    from cifarctl.tracking.mlflow_tracker import connect, get_run

    client = connect(uri)
    active = {e.name: e.experiment_id
              for e in call_with_retry(client.search_experiments, view_type=ViewType.ACTIVE_ONLY)}
    names = _choose(active, experiments, client.tracking_uri)
    filters = [filter_string] if filter_string else []
    if parent is not None:
        experiment_id = get_run(client, parent, what="parent run").info.experiment_id
        names = _parent_experiment(names, active, experiment_id, parent, experiments)
        filters.append(f"tags.{PARENT_TAG} = '{parent}'")
    records = []
    for run in _search(client, list(names), " and ".join(filters)) if names else []:
        info, data = run.info, run.data
        records.append({
            "run_id": info.run_id, "experiment_id": info.experiment_id,
            "experiment": names.get(info.experiment_id, info.experiment_id),
            "status": info.status, "run_name": info.run_name, "start_time": info.start_time,
            "artifact_uri": info.artifact_uri,
            **{f"params.{k}": v for k, v in data.params.items()},
            **{f"metrics.{k}": v for k, v in data.metrics.items()},
            **{f"tags.{k}": v for k, v in data.tags.items()}})
    return _frame(records), names


def _parent_experiment(names: dict[str, str], active: dict[str, str], experiment_id: str,
                       parent: str, experiments: Sequence[str] | None) -> dict[str, str]:
    if experiments and experiment_id not in names:
        raise UsageError(f"parent run {parent} is in experiment {experiment_id}, not in "
                         f"{', '.join(experiments)}; drop --experiment or pick another parent")
    by_id = {i: n for n, i in active.items()}
    return {experiment_id: by_id.get(experiment_id, experiment_id)}


# ---- reader 2: MLflow's sqlite tables, read-only ---------------------------------------------

class _UseMlflow(Exception):
    """The sqlite fast path does not apply; read through MLflow."""


_SCHEMA = {"experiments": {"experiment_id", "name", "lifecycle_stage"},
           "runs": {"run_uuid", "name", "status", "start_time", "lifecycle_stage",
                    "artifact_uri", "experiment_id"},
           "params": {"key", "value", "run_uuid"}, "tags": {"key", "value", "run_uuid"},
           "latest_metrics": {"key", "value", "is_nan", "run_uuid"}}


def _sqlite_frame(db: Path, uri: str, experiments: Sequence[str] | None, parent: str | None
                  ) -> tuple[pd.DataFrame, dict[str, str]]:
    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=20)
    except sqlite3.Error as err:
        raise _UseMlflow from err
    try:
        for table, columns in _SCHEMA.items():
            have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
            if not columns <= have:
                raise _UseMlflow
        columns = {row[1] for row in con.execute("PRAGMA table_info(experiments)")}
        if "workspace" in columns and con.execute(
                "SELECT 1 FROM experiments WHERE workspace IS NOT NULL AND "
                "workspace != 'default' LIMIT 1").fetchone():
            raise _UseMlflow  # MLflow decides which workspace a user sees
        active = {name: str(i) for i, name in con.execute(
            "SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active'")}
        names = _choose(active, experiments, uri)
        if parent is not None:
            found = con.execute("SELECT experiment_id FROM runs WHERE run_uuid = ? AND "
                                "lifecycle_stage = 'active'", (parent,)).fetchone()
            if found is None:
                raise _UseMlflow  # MLflow's reader says what is wrong with the id
            names = _parent_experiment(names, active, str(found[0]), parent, experiments)
        return _sqlite_records(con, names, parent), names
    except sqlite3.Error as err:
        raise _UseMlflow from err
    finally:
        con.close()


def _sqlite_records(con: sqlite3.Connection, names: dict[str, str], parent: str | None
                    ) -> pd.DataFrame:
    ids = list(names)
    marks = ",".join("?" * len(ids))
    selected = (f"SELECT run_uuid FROM runs WHERE lifecycle_stage = 'active' AND "
                f"experiment_id IN ({marks})")
    records: dict[str, dict[str, Any]] = {}
    for run_id, name, status, start, artifact_uri, experiment_id in con.execute(
            f"SELECT run_uuid, name, status, start_time, artifact_uri, experiment_id FROM runs "
            f"WHERE lifecycle_stage = 'active' AND experiment_id IN ({marks})", ids):
        records[run_id] = {"run_id": run_id, "experiment_id": str(experiment_id),
                           "experiment": names[str(experiment_id)], "status": status,
                           "run_name": name, "start_time": start, "artifact_uri": artifact_uri}
    for table, prefix in (("params", "params."), ("tags", "tags.")):
        for run_id, key, value in con.execute(
                f"SELECT run_uuid, key, value FROM {table} WHERE run_uuid IN ({selected})", ids):
            records[run_id][prefix + key] = value
    for run_id, key, value, is_nan in con.execute(
            f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN "
            f"({selected})", ids):
        records[run_id]["metrics." + key] = math.nan if is_nan else float(value)
    rows = list(records.values())
    if parent is not None:
        rows = [r for r in rows if r.get(f"tags.{PARENT_TAG}") == parent]
    return _frame(rows)


# ---- the two together -------------------------------------------------------------------------

def load_runs(tracking_uri: str | None = None, *, experiments: Sequence[str] | None = None,
              parent: str | None = None, filter_string: str = "",
              reader: str = "auto") -> RunSet:
    """Every active run of `experiments` (default: all) matching the filter, report runs out.

    `parent` keeps the children of that run (a sweep: `tags.mlflow.parentRunId`), in the
    parent's experiment. `reader`: "auto" (sqlite fast path when it applies), "mlflow" or
    "sqlite" (tests). Raises UsageError for an unknown experiment or parent, a bad filter,
    or when nothing is left to report on, saying how to choose.
    """
    from cifarctl.tracking.store import resolve_tracking_uri, sqlite_path
    from cifarctl.ui import check_store

    uri = resolve_tracking_uri(tracking_uri)
    check_store(uri)  # a mistyped sqlite path: say so, rather than create an empty store
    filter_string = filter_string.strip()
    db = sqlite_path(uri)
    frame = names = None
    if reader != "mlflow" and db is not None and db.is_file() and not filter_string:
        try:
            frame, names = _sqlite_frame(db, uri, experiments, parent)
        except _UseMlflow:
            if reader == "sqlite":
                raise
    if frame is None:
        frame, names = _mlflow_frame(uri, experiments, parent, filter_string)
    if not names:
        raise UsageError(f"no experiments in {uri}; train a model first (`cifarctl train "
                         f"...`) or pass --tracking-uri")
    kind_col = f"tags.{KIND_TAG}"
    reports = 0
    if kind_col in frame:
        reports = int((frame[kind_col] == REPORT_KIND).sum())
        frame = frame[frame[kind_col] != REPORT_KIND]
    if frame.empty and reports:
        raise UsageError(f"experiment {', '.join(names.values())} holds only report runs "
                         f"({reports}), the files `cifarctl report --out` logged; report on "
                         f"the experiment they came from (their tag report.experiments), "
                         f"e.g. -e {_reported_on(names)}")
    if frame.empty and parent and not filter_string:  # the run exists (checked above)
        raise UsageError(f"run {parent} has no child runs: it is not a sweep's parent run; "
                         f"report on its experiment with -e {', '.join(names.values())}")
    if frame.empty:
        where = (f"experiment {', '.join(names.values())}" if experiments or parent
                 else f"any experiment of {uri}")
        what = ("children of run " + parent) if parent else "runs"
        cond = f" matching --filter {filter_string!r}" if filter_string else ""
        raise UsageError(f"no {what}{cond} in {where}; check the name, the filter "
                         f"(e.g. --filter \"{FILTER_EXAMPLES[0]}\") or --tracking-uri")
    used = sorted(set(frame["experiment"]))
    return RunSet(resolve_heads(frame).reset_index(drop=True), used)


def _reported_on(names: dict[str, str]) -> str:
    """`lt100` for a report experiment `lt100-reports` (`export.report_experiment`)."""
    first = next(iter(names.values()))
    return first.removesuffix("-reports") if first.endswith("-reports") and \
        first != "cifarctl-reports" else "NAME"


HEAD = "params.model.classifier"


def resolve_heads(frame: pd.DataFrame) -> pd.DataFrame:
    """`params.model.classifier` as the head each run trained, so runs of one model group
    together: `auto` becomes what it resolved to for the run's loss (`normed` for LDAM),
    and cifarctl runs logged before the key existed (a `model.name` param, no classifier)
    trained `linear` heads. Runs of other tools are left as they are."""
    from cifarctl.config import resolve_classifier

    loss, model = "params.loss.name", "params.model.name"
    if loss not in frame or model not in frame:
        return frame
    logged = frame[HEAD] if HEAD in frame else [None] * len(frame)

    def head(logged: Any, loss: Any, model: Any) -> Any:
        if not (isinstance(loss, str) and isinstance(model, str)):  # another tool's run
            return logged
        return resolve_classifier(logged if isinstance(logged, str) else None, loss)

    frame = frame.copy()
    frame[HEAD] = [head(*values) for values in zip(logged, frame[loss], frame[model])]
    return frame


SWEEP_PARENT = "parent of a sweep (its child runs are reported)"


def worth_saying(skipped: list[dict]) -> list[dict]:
    """The skipped runs a reader should hear about: a sweep's parent holds no results of its
    own, so leaving it out is expected (it stays in the JSON's `skipped_runs`)."""
    return [s for s in skipped if s["reason"] != SWEEP_PARENT]


def split_usable(runs: RunSet) -> RunSet:
    """Keep FINISHED runs that have `test_acc_at_best`; list the others with the reason.

    A sweep's parent run holds no metrics of its own (its children do): it is left out too,
    and said so.
    """
    frame = runs.frame
    metric = f"metrics.{SUMMARY_METRIC}"
    parent_col = "tags.mlflow.parentRunId"
    parents = set(frame[parent_col].dropna()) if parent_col in frame else set()
    has_metric = frame[metric].notna() if metric in frame else frame["run_id"].isna()
    skipped = []
    keep = []
    for i, row in enumerate(frame.itertuples(index=False)):
        run_id, status = row.run_id, row.status
        if run_id in parents and not has_metric.iloc[i]:
            reason = SWEEP_PARENT
        elif status != "FINISHED":
            reason = (f"status {status}" + (": interrupted, resume it with `cifarctl train "
                                            f"--resume {run_id}`" if status == "KILLED" else ""))
        elif not has_metric.iloc[i]:
            reason = f"no {SUMMARY_METRIC} metric (not a cifarctl training run?)"
        else:
            keep.append(i)
            continue
        skipped.append({"run_id": run_id, "run_name": row.run_name or "", "reason": reason})
    return RunSet(frame.iloc[keep].reset_index(drop=True), runs.experiments,
                  runs.skipped + skipped)


def drop_repeats(runs: RunSet) -> RunSet:
    """One run per configuration and seed: the latest; the others are listed as skipped.

    Two runs with every result-changing param equal, seed included (`train` run twice, or
    a sweep run again under another experiment name), are one replicate, not two: counting
    both would narrow the confidence interval on copied numbers. Runs without a `run.seed`
    param (other tools) are never merged, nor are runs on different data (regenerated under
    one spec: `groups.split_by_data`).
    """
    from cifarctl.report.groups import DATA_KEY, MISSING, SEED_KEY, default_columns

    frame = runs.frame
    seed = f"params.{SEED_KEY}"
    if frame.empty or seed not in frame:
        return runs
    keys = [*default_columns(frame), seed]
    if DATA_KEY in frame and frame[DATA_KEY].nunique() > 1:
        keys.append(DATA_KEY)
    keyed = frame[keys].astype(object).where(frame[keys].notna(), MISSING).astype(str)
    latest_first = frame.sort_values("start_time", ascending=False, kind="stable").index
    has_seed = frame[seed].notna()
    kept: dict[tuple, str] = {}
    drop, skipped = [], []
    for i in latest_first:
        if not has_seed[i]:
            continue
        key = tuple(keyed.loc[i])
        if key not in kept:
            kept[key] = frame.at[i, "run_id"]
            continue
        drop.append(i)
        skipped.append({"run_id": frame.at[i, "run_id"],
                        "run_name": frame.at[i, "run_name"] or "",
                        "reason": f"repeats run {kept[key]} (same configuration and seed); "
                                  "the latest is reported"})
    if not drop:
        return runs
    return RunSet(frame.drop(index=drop).reset_index(drop=True), runs.experiments,
                  runs.skipped + skipped)
