"""What the store holds about a run, as plain values: what `RunStore` returns to its readers.

    run = store.get_run(run_id)
    run.status, run.tags["cifarctl.trial_key"], run.metrics["test_acc_at_best"]

Readers (`report`, `eval`, `sweep`) get these instead of MLflow's `Run` entities, so they
never import MLflow, and the store's two readers (MLflow's API, and its sqlite tables read
directly: `sqlite_reader`) can be checked to return the same thing. MLflow-free.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cifarctl.errors import UsageError


@dataclass(frozen=True)
class StoredRun:
    """One run: its attributes, params, latest metric values and tags."""

    run_id: str
    experiment_id: str
    status: str  # RUNNING | SCHEDULED | FINISHED | FAILED | KILLED
    run_name: str | None
    start_time: int | None  # ms since the epoch
    artifact_uri: str | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # latest value of each (NaN kept)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Selection:
    """The runs `RunStore.select` found, oldest first, and the experiments it looked in."""

    runs: list[StoredRun]
    experiments: dict[str, str]  # experiment id -> name


class InvalidFilter(UsageError):
    """A search filter the store refused; `reason` is the store's one-line explanation."""

    def __init__(self, filter_string: str, reason: str) -> None:
        super().__init__(f"invalid filter {filter_string!r}: {reason}")
        self.filter_string, self.reason = filter_string, reason


def in_order(runs: Iterable[StoredRun]) -> list[StoredRun]:
    """Oldest first (start time, then run id): one order, whichever reader found them."""
    return sorted(runs, key=lambda r: (r.start_time or 0, r.run_id))


def choose_experiments(active: dict[str, str], names: Sequence[str] | None,
                       uri: str) -> dict[str, str]:
    """{experiment id: name} of the named experiments (all of `active`, name -> id, when none
    are named); UsageError listing the experiments for an unknown name."""
    if not names:
        return {i: n for n, i in active.items()}
    unknown = [n for n in names if n not in active]
    if unknown:
        known = ", ".join(sorted(active)) or "none"
        raise UsageError(f"unknown experiment {unknown[0]!r} in {uri} (experiments: {known})")
    return {active[n]: n for n in names}


def parent_experiment(chosen: dict[str, str], active: dict[str, str], experiment_id: str,
                      parent: str, names: Sequence[str] | None) -> dict[str, str]:
    """{id: name} of the parent run's own experiment, where its children are; UsageError if
    experiments were named (`names`, chosen as `chosen`) and it is not among them."""
    if names and experiment_id not in chosen:
        raise UsageError(f"parent run {parent} is in experiment {experiment_id}, not in "
                         f"{', '.join(names)}; drop --experiment or pick another parent")
    by_id = {i: n for n, i in active.items()}
    return {experiment_id: by_id.get(experiment_id, experiment_id)}
