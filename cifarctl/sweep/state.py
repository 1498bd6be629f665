"""What a sweep knows about its trials while it runs, and how it ended.

    state = TrialState(plan.trials[0])          # queued
    state.status, state.epoch = "running", 3    # the scheduler updates it from worker events
    SweepOutcome(plan, parent_id, [state]).counts   # {"ok": 0, ..., "not run": 0}

Written by the scheduler (`runner`), shown by the displays (`live`): both import it from
here, so neither imports the other for it. Torch-free and MLflow-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cifarctl.sweep.spec import Plan, Trial

STATUSES = ("ok", "failed", "skipped", "killed", "not run")  # a trial's final word


@dataclass
class TrialState:
    """What the sweep knows about one trial; the live table shows these."""

    trial: Trial
    status: str = "queued"  # queued | running | ok | failed | skipped | killed | not run
    run_id: str | None = None
    # an earlier attempt's local checkpoint, (epoch, step): trials there resume fused
    resume_at: tuple[int, int] | None = None
    epoch: int = 0  # epochs done
    epochs: int = 0
    acc: float | None = None  # test accuracy after the last epoch done
    step: tuple[int, int] | None = None  # (steps done, steps) in the current epoch
    pid: int | None = None
    message: str = ""  # one line: why it failed, what it resumed, ...
    summary: dict[str, float] = field(default_factory=dict)


@dataclass
class SweepOutcome:
    plan: Plan
    parent_run_id: str
    trials: list[TrialState]
    interrupted: bool = False  # a signal stopped it

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(t.status == s for t in self.trials) for s in STATUSES}
