"""A sweep's MLflow runs: one parent per spec, one child per trial, found again by their keys.

    store = open_store(uri)
    sweep = open_sweep(store, plan)            # finds or creates the parent run
    sweep.children["c0ffee123456"].status      # the trial's child from an earlier attempt
    run_id = create_child(store, plan, trial, sweep.parent_id)

The parent carries the tag `cifarctl.sweep_key` (the plan's key) and each child
`cifarctl.trial_key` and `mlflow.parentRunId`, so running the same spec again finds the same
parent and its children. A trial without a child here that FINISHED under another sweep of the
experiment (a spec since given more seeds) counts too. Only the sweep process creates runs,
one at a time, and only the one sweep process that holds the parent's claim (`lease`: two
drivers of one spec, on one machine or two, never both train it), so a trial never gets a
second child.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from cifarctl.names import (
    SWEEP_KEY_TAG,
    TRIAL_INDEX_TAG,
    TRIAL_KEY_TAG,
    TRIAL_OVERRIDES_TAG,
    describe,
    run_name,
)
from cifarctl.sweep.lease import CLAIM, claim, driver_id, heartbeat
from cifarctl.sweep.spec import Plan, Trial, plan_json
from cifarctl.tracking import RUN_STATUSES
from cifarctl.tracking.mlflow_tracker import start_run

SETTLE_S = 2.0  # after creating a parent, how long until the drivers that did compare (`_settle`)

if TYPE_CHECKING:
    from cifarctl.sweep.state import SweepOutcome
    from cifarctl.tracking.runstore import RunStore
    from cifarctl.tracking.stored import StoredRun


@dataclass
class SweepRuns:
    parent_id: str
    children: dict[str, StoredRun]  # trial key -> the child run to keep (see `_by_trial`)


def _params(plan: Plan) -> dict[str, Any]:
    """The spec as the parent's params: its source, axes, lists and the shared base config."""
    spec = plan.spec
    params: dict[str, Any] = {"sweep.spec": spec.source, "sweep.key": plan.key,
                              "sweep.trials": len(plan.trials)}
    params.update({f"grid.{k}": json.dumps(v) for k, v in spec.grid.items()})
    for name in ("include", "exclude"):
        if getattr(spec, name):
            params[f"sweep.{name}"] = json.dumps(getattr(spec, name))
    if spec.random is not None:
        params["sweep.random"] = json.dumps({"n": spec.random[0], "seed": spec.random[1]})
    params.update({f"base.{k}": v for k, v in spec.base.to_flat().items()})
    return params


def _by_trial(runs: list[StoredRun], keys: Collection[str] | None = None
              ) -> dict[str, StoredRun]:
    """Trial key (of `keys`, if given) -> its run to keep: a FINISHED one, else the latest."""
    found: dict[str, list[StoredRun]] = {}
    for run in runs:
        key = run.tags.get(TRIAL_KEY_TAG)
        if key is not None and (keys is None or key in keys):
            found.setdefault(key, []).append(run)
    return {k: ([r for r in v if r.status == "FINISHED"]
                or sorted(v, key=lambda r: r.start_time or 0))[-1] for k, v in found.items()}


def existing_runs(store: RunStore, plan: Plan
                  ) -> tuple[StoredRun | None, dict[str, StoredRun]]:
    """(the parent of an earlier attempt at `plan` (same sweep key) or None, trial key -> the
    run to keep for it): the parent's children, plus FINISHED runs of the experiment's other
    sweeps for trials without one (a spec given more seeds is a new plan whose shared trials
    keep their keys: extending a sweep trains only what is new); read-only."""
    experiment = plan.spec.experiment
    parents = store.find_runs(experiment, f"tags.`{SWEEP_KEY_TAG}` = '{plan.key}'",
                              order_by=["attributes.start_time ASC"])
    parent = parents[0] if parents else None
    runs = _by_trial(store.children(parent.run_id, experiment)) if parent is not None else {}
    missing = {t.key for t in plan.trials} - set(runs)
    if missing:
        runs |= _by_trial(store.find_runs(experiment, f"attributes.status = 'FINISHED' and "
                                                      f"tags.`{TRIAL_KEY_TAG}` LIKE '%'"), missing)
    return parent, runs


def open_sweep(store: RunStore, plan: Plan) -> SweepRuns:
    """Find the parent run of `plan` (same sweep key) or create it, and claim it for this
    process (`lease.claim`): UsageError while another driver, here or on another machine,
    drives it."""
    parent, runs = existing_runs(store, plan)
    if parent is None:
        created = _create_parent(store, plan)
        parent = _settle(store, plan, created)
        if parent.run_id == created:
            return SweepRuns(created, runs)
        parent, runs = existing_runs(store, plan)  # the other driver's, created at once
        assert parent is not None
    claim(store, parent, plan.spec.experiment)
    return SweepRuns(parent.run_id, runs)


def _create_parent(store: RunStore, plan: Plan) -> str:
    """A new parent run for `plan`, claimed by this process (`lease`); its id."""
    spec = plan.spec
    tracker = start_run(experiment=spec.experiment, tracking_uri=store.uri, run_name=spec.name,
                        tags={SWEEP_KEY_TAG: plan.key, "trial_count": len(plan.trials),
                              **heartbeat()},
                        description=f"Sweep of {len(plan.trials)} trials from "
                                    f"{spec.source}; each trial is a child run.")
    tracker.log_params({**_params(plan), f"{CLAIM}1": driver_id()})
    tracker.log_text(yaml.safe_dump(spec.document, sort_keys=False), "sweep.yaml")
    tracker.log_text(json.dumps(plan_json(plan), indent=1), "plan.json")
    return tracker.run_id


def _settle(store: RunStore, plan: Plan, created: str) -> StoredRun:
    """The parent every driver of `plan` keeps when several created one at once: the oldest
    (then the lowest run id), as all of them read it once SETTLE_S has passed since their
    own was created (longer than a driver takes from finding none to creating its own). A
    driver whose parent is not that one deletes it."""
    time.sleep(SETTLE_S)
    parents = store.find_runs(plan.spec.experiment, f"tags.`{SWEEP_KEY_TAG}` = '{plan.key}'")
    kept = min(parents, key=lambda r: (r.start_time or 0, r.run_id))
    if kept.run_id != created:
        store.delete_run(created)
    return kept


def create_child(store: RunStore, plan: Plan, trial: Trial, parent_id: str) -> str:
    """Create the trial's child run (RUNNING, tagged with its key); the worker trains in it."""
    cfg = trial.config
    tracker = start_run(experiment=plan.spec.experiment, tracking_uri=store.uri,
                        run_name=run_name(cfg), parent_run_id=parent_id,
                        tags={TRIAL_KEY_TAG: trial.key, TRIAL_INDEX_TAG: trial.index,
                              TRIAL_OVERRIDES_TAG: json.dumps(trial.overrides), **heartbeat()},
                        description=describe(cfg))
    return tracker.run_id


def end_if_running(store: RunStore, run_id: str, status: str) -> None:
    """Give a run whose worker is gone a terminal status (a crashed or killed worker)."""
    if store.get_run(run_id).status not in RUN_STATUSES:
        store.set_status(run_id, status)


def finish_parent(store: RunStore, outcome: SweepOutcome) -> None:
    counts = outcome.counts
    tags = {f"trials_{name.replace(' ', '_')}": n for name, n in counts.items()}
    # the counts are this invocation's; after a rerun "skipped" trials had FINISHED before
    tags["trials_finished"] = counts["ok"] + counts["skipped"]
    store.set_tags(outcome.parent_run_id, tags)
    store.set_status(outcome.parent_run_id, "KILLED" if outcome.interrupted
                     else "FAILED" if counts["failed"] or counts["killed"] or counts["not run"]
                     else "FINISHED")
