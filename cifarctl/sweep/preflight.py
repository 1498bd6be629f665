"""What a sweep checks in its own process before it creates any MLflow run.

    preflight(plan, tracking_uri, checkpoint_root)  # UsageError naming the first bad trial

Without it a missing GPU or a mistyped dataset path would create the parent run and then one
FAILED child per trial, each with the same reason. Loading each dataset here also imports or
downloads it once for all the workers.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from cifarctl.errors import UsageError
from cifarctl.sweep.spec import Plan, Trial

if TYPE_CHECKING:
    from cifarctl.tracking.stored import StoredRun


def _label(trial: Trial) -> str:
    shown = ", ".join(f"{k}={v!r}" for k, v in trial.overrides.items())
    return f"trial {trial.index + 1} {{{shown}}}" if shown else f"trial {trial.index + 1}"


def check_trials(trials: list[Trial], *, devices: bool = True) -> None:
    """Raise UsageError, naming the trial, for the first trial this machine cannot train
    (`devices=False`: its device is not checked, for trials that run on a Ray cluster)."""
    from cifarctl.data import load_dataset
    from cifarctl.training import resolve_device, run_splits  # lazily loaded names

    load, resolve = cache(load_dataset), cache(resolve_device)  # each once, however many trials
    for trial in trials:
        try:
            if devices:
                resolve(trial.config.run.device)
            run_splits(trial.config, load(trial.config.data.dataset))
        except UsageError as err:
            raise UsageError(f"{_label(trial)}: {err}") from None


def check_resumes(plan: Plan, runs: dict[str, StoredRun], checkpoint_root: Path) -> None:
    """Raise UsageError, naming the trial, if an unfinished trial's run has a checkpoint here
    from data since changed: a resume in a worker would fail the same way on every rerun."""
    from cifarctl.checkpoint import checkpoint_path, saved_fingerprint
    from cifarctl.data import load_dataset

    load = cache(load_dataset)
    for trial in plan.trials:
        run = runs.get(trial.key)
        if run is None or run.status == "FINISHED":
            continue
        path = checkpoint_path(checkpoint_root, run.run_id)
        if not path.is_file():
            continue  # on another machine, or failed before its first checkpoint
        saved = saved_fingerprint(path)
        spec = trial.config.data.dataset
        if saved is None:
            continue  # written before checkpoints recorded their data
        current = load(spec).fingerprint
        if saved != current:
            raise UsageError(f"{_label(trial)}: its run {run.run_id} began on {spec} with "
                             f"fingerprint {saved}, but {spec} is now {current} (regenerated or "
                             f"re-imported?); resuming would mix two datasets in one run: "
                             f"restore that data, or run the sweep afresh in a new experiment "
                             f"(--experiment NAME)")


def preflight(plan: Plan, tracking_uri: str | None, checkpoint_root: Path, *,
              devices: bool = True) -> None:
    """Every check, read-only, before a sweep creates or reopens a run: the store answers,
    the trials still to train can train here (FINISHED ones are not checked: a finished sweep
    reruns on a machine without its GPU), and none would resume on changed data."""
    from cifarctl.sweep.store import existing_runs
    from cifarctl.tracking import check_reachable, resolve_tracking_uri
    from cifarctl.tracking.runstore import open_store

    check_reachable(resolve_tracking_uri(tracking_uri))  # a down server before the data
    _, runs = existing_runs(open_store(tracking_uri), plan)
    done = {key for key, run in runs.items() if run.status == "FINISHED"}
    check_trials([t for t in plan.trials if t.key not in done], devices=devices)
    check_resumes(plan, runs, checkpoint_root)
