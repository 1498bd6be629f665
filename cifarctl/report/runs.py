"""The runs a report is about, read from the MLflow store into one pandas DataFrame.

    client = connect(tracking_uri)
    runs = load_runs(client, experiments=["lt100"], filter_string="params.`loss.name` = 'focal'")
    runs.frame["metrics.test_acc_at_best"]      # one row per run, mlflow.search_runs' columns

The query is the one `mlflow.search_runs` pages over (`MlflowClient.search_runs`), on the
client of the store the user named rather than MLflow's process-global tracking URI, with
pages of `PAGE_SIZE` runs so 500 runs are one round trip. Columns follow
`mlflow.search_runs(output_format="pandas")`: `run_id`, `experiment_id`, `status`,
`params.<key>`, `metrics.<key>` (latest value), `tags.<key>`, plus `experiment` (its name).
Report runs (tag `cifarctl.kind=report`) never count as runs to report on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cifarctl.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient

KIND_TAG = "cifarctl.kind"  # set to REPORT_KIND on the runs `report` logs its files to
REPORT_KIND = "report"
PAGE_SIZE = 50_000  # MLflow's largest allowed page (SEARCH_MAX_RESULTS_THRESHOLD)
SUMMARY_METRIC = "test_acc_at_best"  # a run without it has nothing to report (ARCHITECTURE.md)
FILTER_EXAMPLES = ("params.`loss.name` = 'focal'", "params.`data.imbalance` = '100.0'",
                   "tags.loss = 'focal' and metrics.test_acc_at_best > 0.6",
                   "attributes.run_name LIKE 'resnet32-%'")


@dataclass
class RunSet:
    """Runs to report on, and the ones left out with the reason (shown to the user)."""

    frame: pd.DataFrame
    experiments: list[str]  # names of the experiments the runs come from
    skipped: list[dict[str, str]] = field(default_factory=list)  # run_id, run_name, reason


def _experiments(client: MlflowClient, names: Sequence[str] | None) -> dict[str, str]:
    """{experiment id: name}: the named active experiments, or every active one."""
    from mlflow.entities import ViewType

    from cifarctl.tracking import call_with_retry

    active = {e.name: e.experiment_id
              for e in call_with_retry(client.search_experiments, view_type=ViewType.ACTIVE_ONLY)}
    if not names:
        return {i: n for n, i in active.items()}
    unknown = [n for n in names if n not in active]
    if unknown:
        known = ", ".join(sorted(active)) or "none"
        raise UsageError(f"unknown experiment {unknown[0]!r} in {client.tracking_uri} "
                         f"(experiments: {known})")
    return {active[n]: n for n in names}


def _search(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Any]:
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


def _frame(runs: list[Any], names: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    records = []
    for run in runs:
        info, data = run.info, run.data
        record = {"run_id": info.run_id, "experiment_id": info.experiment_id,
                  "experiment": names.get(info.experiment_id, info.experiment_id),
                  "status": info.status, "run_name": info.run_name,
                  "start_time": info.start_time, "artifact_uri": info.artifact_uri}
        record.update({f"params.{k}": v for k, v in data.params.items()})
        record.update({f"metrics.{k}": v for k, v in data.metrics.items()})
        record.update({f"tags.{k}": v for k, v in data.tags.items()})
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        frame = pd.DataFrame(columns=["run_id", "experiment_id", "experiment", "status",
                                      "run_name", "start_time", "artifact_uri"])
    return frame


def load_runs(client: MlflowClient, *, experiments: Sequence[str] | None = None,
              parent: str | None = None, filter_string: str = "") -> RunSet:
    """Every active run of `experiments` (default: all) matching the filter, report runs out.

    `parent` keeps the children of that run (a sweep: `tags.mlflow.parentRunId`), in the
    parent's experiment. Raises UsageError for an unknown experiment or parent, a bad filter,
    or when nothing is left to report on, saying how to choose.
    """
    from cifarctl.tracking.mlflow_tracker import get_run

    names = _experiments(client, experiments)
    filters = [filter_string.strip()] if filter_string.strip() else []
    if parent is not None:
        parent_run = get_run(client, parent, what="parent run")
        experiment_id = parent_run.info.experiment_id
        if experiments and experiment_id not in names:
            raise UsageError(f"parent run {parent} is in experiment {experiment_id}, not in "
                             f"{', '.join(experiments)}; drop --experiment or pick another "
                             f"parent")
        names = {experiment_id: names.get(experiment_id) or _experiments(client, None).get(
            experiment_id, experiment_id)}
        filters.append(f"tags.mlflow.parentRunId = '{parent}'")
    if not names:
        raise UsageError(f"no experiments in {client.tracking_uri}; train a model first "
                         f"(`cifarctl train ...`) or pass --tracking-uri")
    frame = _frame(_search(client, list(names), " and ".join(filters)), names)
    kind_col = f"tags.{KIND_TAG}"
    if kind_col in frame:
        frame = frame[frame[kind_col] != REPORT_KIND]
    if frame.empty:
        where = (f"experiment {', '.join(names.values())}" if experiments or parent
                 else f"any experiment of {client.tracking_uri}")
        what = ("children of run " + parent) if parent else "runs"
        cond = f" matching --filter {filter_string!r}" if filter_string.strip() else ""
        raise UsageError(f"no {what}{cond} in {where}; check the name, the filter "
                         f"(e.g. --filter \"{FILTER_EXAMPLES[0]}\") or --tracking-uri")
    used = sorted(set(frame["experiment"]))
    return RunSet(frame.reset_index(drop=True), used)


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
            reason = "parent of a sweep (its child runs are reported)"
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
