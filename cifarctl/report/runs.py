"""The runs a report is about, read from the MLflow store into one pandas DataFrame.

    runs = load_runs("sqlite:///mlflow.db", experiments=["lt100"],
                     filter_string="params.loss.name = 'focal'")
    runs.frame["metrics.test_acc_at_best"]      # one row per run, mlflow.search_runs' columns

Columns follow `mlflow.search_runs(output_format="pandas")`: `run_id`, `experiment_id`,
`status`, `params.<key>`, `metrics.<key>` (latest value), `tags.<key>`, plus `experiment`
(its name) and `run_name`; rows oldest first. Report runs (tag `cifarctl.kind=report`) never
count. The runs come from `RunStore.select`, which reads a sqlite store's tables directly
when there is no filter (the report over 500 runs in under 3 s, issue 6) and asks MLflow
otherwise; both give the same frame (tested).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cifarctl.errors import UsageError
from cifarctl.names import KIND_TAG, PARENT_TAG, REPORT_KIND, TEST_ACC_AT_BEST

if TYPE_CHECKING:
    import pandas as pd

    from cifarctl.tracking.runstore import Reader
    from cifarctl.tracking.stored import Selection

SUMMARY_METRIC = TEST_ACC_AT_BEST  # a run without it has nothing to report
FILTER_EXAMPLES = ("params.loss.name = 'focal'", "params.data.imbalance = '100.0'",
                   "tags.loss = 'focal' and metrics.test_acc_at_best > 0.6",
                   "attributes.run_name LIKE 'resnet32-%'")
CORRUPTION_COLUMN = re.compile(r"metrics\.eval_corruption_(\w+)_s([1-5])")
INFO_COLUMNS = ["run_id", "experiment_id", "experiment", "status", "run_name", "start_time",
                "artifact_uri"]


@dataclass
class RunSet:
    """Runs to report on, and the ones left out with the reason (shown to the user)."""

    frame: pd.DataFrame
    experiments: list[str]  # names of the experiments the runs come from
    skipped: list[dict[str, str]] = field(default_factory=list)  # run_id, run_name, reason


def runs_frame(selection: Selection) -> pd.DataFrame:
    """The frame of the module docstring. A config key added later (`config.later_defaults`)
    that some runs logged reads as its default (`str(value)`, as MLflow logs it) in the runs
    that did not: they trained with it."""
    import pandas as pd

    from cifarctl.config import later_defaults

    records = []
    for run in selection.runs:
        record: dict[str, Any] = {
            "run_id": run.run_id, "experiment_id": run.experiment_id,
            "experiment": selection.experiments.get(run.experiment_id, run.experiment_id),
            "status": run.status, "run_name": run.run_name, "start_time": run.start_time,
            "artifact_uri": run.artifact_uri}
        for prefix, values in (("params.", run.params), ("metrics.", run.metrics),
                               ("tags.", run.tags)):
            record.update((prefix + key, values[key]) for key in sorted(values))
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return pd.DataFrame(columns=INFO_COLUMNS)
    for key, default in later_defaults().items():
        if f"params.{key}" in frame:
            frame[f"params.{key}"] = frame[f"params.{key}"].fillna(str(default))
    return frame


def load_runs(tracking_uri: str | None = None, *, experiments: Sequence[str] | None = None,
              parent: str | None = None, filter_string: str = "",
              reader: Reader = "auto") -> RunSet:
    """Every active run of `experiments` (default: all) matching the filter, report runs out.

    `parent` keeps the children of that run (a sweep: `tags.mlflow.parentRunId`), in the
    parent's experiment. `reader`: as `RunStore.select` ("auto", or "mlflow" / "sqlite").
    """
    from cifarctl.tracking.runstore import RunStore
    from cifarctl.tracking.store import check_store
    from cifarctl.tracking.stored import InvalidFilter

    store = RunStore(tracking_uri)  # opens MLflow only if the sqlite fast path cannot serve
    uri = store.uri
    check_store(uri)  # a mistyped sqlite path: say so, rather than create an empty store
    filter_string = filter_string.strip()
    try:
        selection = store.select(experiments, parent=parent, filter_string=filter_string,
                                 reader=reader)
    except InvalidFilter as err:
        raise UsageError(f"invalid --filter {filter_string!r}: {err.reason}; e.g. "
                         f"--filter \"{FILTER_EXAMPLES[0]}\"") from None
    frame, names = runs_frame(selection), selection.experiments
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
    """`lt100` for a report experiment `lt100-reports` (`export.log_report_run`)."""
    first = next(iter(names.values()))
    reported_on = first.removesuffix("-reports")
    return reported_on if reported_on != first and first != "cifarctl-reports" else "NAME"


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
    """Keep FINISHED runs that have `test_acc_at_best`; list the others with the reason (a
    sweep's parent holds no metrics of its own: its children do)."""
    frame = runs.frame
    metric = f"metrics.{SUMMARY_METRIC}"
    parent_col = f"tags.{PARENT_TAG}"
    parents = set(frame[parent_col].dropna()) if parent_col in frame else set()
    has_metric = frame[metric].notna() if metric in frame else frame["run_id"].isna()
    skipped, keep = [], []
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
    from cifarctl.report.groups import DATA_KEY, SEED_KEY, default_columns, key_frame

    frame = runs.frame
    seed = f"params.{SEED_KEY}"
    if frame.empty or seed not in frame:
        return runs
    keys = [*default_columns(frame), seed]
    if DATA_KEY in frame and frame[DATA_KEY].nunique() > 1:
        keys.append(DATA_KEY)
    keyed = key_frame(frame, keys)
    latest_first = frame.sort_values("start_time", ascending=False, kind="stable").index
    has_seed = frame[seed].notna()
    kept: dict[tuple, str] = {}
    repeats: dict[int, dict[str, str]] = {}  # frame index -> its skipped entry
    for i in latest_first:
        if not has_seed[i]:
            continue
        key = tuple(keyed.loc[i])
        if key not in kept:
            kept[key] = frame.at[i, "run_id"]
            continue
        repeats[i] = {"run_id": frame.at[i, "run_id"], "run_name": frame.at[i, "run_name"] or "",
                      "reason": f"repeats run {kept[key]} (same configuration and seed); "
                                "the latest is reported"}
    if not repeats:
        return runs
    return RunSet(frame.drop(index=list(repeats)).reset_index(drop=True), runs.experiments,
                  runs.skipped + list(repeats.values()))


def common_corruptions(frame: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """`frame` with `eval_mean_corruption_acc` recomputed over the corruptions that every
    evaluated run has, and a note naming them when that is not all of them.

    Each `cifarctl eval --corruption ...` logs the mean over the corruptions it was asked
    for, so runs evaluated under different sets would otherwise be averaged and compared
    on different tests. The per-corruption metrics (`eval_corruption_<name>_s<k>`) stay
    logged, so the mean over a common set can be taken from them."""
    from cifarctl.evaluation import CORRUPTION_NAMES, SEVERITIES

    found: dict[str, list[str]] = {}
    for column in frame.columns:
        if m := CORRUPTION_COLUMN.fullmatch(column):
            found.setdefault(m.group(1), []).append(column)
    if not found:
        return frame, None
    complete = {name: frame[cols].notna().all(axis=1) for name, cols in found.items()
                if len(cols) == SEVERITIES}
    evaluated = frame[[c for cols in found.values() for c in cols]].notna().any(axis=1)
    common = sorted((n for n, ok in complete.items() if ok[evaluated].all()),
                    key=lambda n: (CORRUPTION_NAMES.index(n) if n in CORRUPTION_NAMES else 99, n))
    out = frame.copy()
    mean_column = "metrics.eval_mean_corruption_acc"
    if not common:
        out[mean_column] = math.nan
        return out, ("no corruption acc: the runs were evaluated under different corruptions, "
                     "none common to all; evaluate them alike, e.g. `cifarctl eval RUN "
                     "--corruptions`")
    columns = [c for name in common for c in sorted(found[name])]
    out[mean_column] = out[columns].mean(axis=1).where(evaluated)
    if len(common) == len(CORRUPTION_NAMES) and len(found) == len(common):
        return out, None
    return out, (f"corruption acc: mean over severities 1-{SEVERITIES} of "
                 f"{', '.join(common)}, the corruptions every evaluated run has")
