"""The training loop: the epochs of one run, or of a fused group of K, through one code path.

    outcome = train(cfg, tracker=NullTracker())                       # one run
    outcomes = train_group([cfg0, cfg1, cfg2], trackers=[t0, t1, t2])  # K runs, fused

`train_group` owns the order of things; the numbers come from `Group`, and everything a run
leaves behind goes through its `RunRecord`. Besides finishing, a run stops on Ctrl-C / SIGTERM
(checkpoint at the current step, KILLED, resumable exactly; a second Ctrl-C ends it at once),
a non-finite loss (FAILED, the last good checkpoint kept; in a group the others go on) or an
error (FAILED). A resumed run ends where an uninterrupted one would.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cifarctl.checkpoint import RunState
from cifarctl.config import RunConfig
from cifarctl.engine import TrainSums
from cifarctl.fused import check_fusable
from cifarctl.names import FUSED_GROUP_TAG, FUSED_MEMBERS_TAG
from cifarctl.progress import NullReporter, Reporter, epoch_line
from cifarctl.tracking import Tracker
from cifarctl.training.background import Background
from cifarctl.training.data import RunData, prepare_data, share_data
from cifarctl.training.device import resolve_device
from cifarctl.training.group import Group, NonFiniteLoss, build_member
from cifarctl.training.record import RunOutcome, RunRecord
from cifarctl.training.signals import StopFlag


class FanOut:
    """One `Reporter` that passes each hook call on to every one of `reporters`."""

    def __init__(self, reporters: Sequence[Reporter]) -> None:
        self.reporters = list(reporters)

    def message(self, text: str) -> None:
        for r in self.reporters:
            r.message(text)

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        for r in self.reporters:
            r.epoch_started(epoch, epochs, steps)

    def step(self, steps_done: int, running: Any) -> None:
        for r in self.reporters:
            r.step(steps_done, running)

    def epoch_ended(self, epoch: int, epochs: int, metrics: Any) -> None:
        for r in self.reporters:
            r.epoch_ended(epoch, epochs, metrics)

    def close(self) -> None:
        for r in self.reporters:
            r.close()


class _NamedLines(NullReporter):
    """A fused member's epoch results as lines on the group's reporter, named by its run."""

    def __init__(self, reporter: Reporter, name: str) -> None:
        self.reporter, self.name = reporter, name

    def epoch_ended(self, epoch: int, epochs: int, metrics: Mapping[str, float]) -> None:
        self.reporter.message(f"{self.name}  {epoch_line(epoch, epochs, metrics)}")


def train(cfg: RunConfig, *, tracker: Tracker, reporter: Reporter | None = None,
          checkpoint_root: Path = Path("checkpoints"), resume: RunState | None = None,
          data: RunData | None = None, resume_flags: str = "") -> RunOutcome:
    """`train_group` of one run; `data`: `prepare_data(cfg, ...)` when the caller has it
    already; `resume_flags`: what `cifarctl train --resume RUN_ID` needs besides the id, for
    the advice on Ctrl-C."""
    outcome, = train_group([cfg], trackers=[tracker], reporter=reporter,
                           checkpoint_root=checkpoint_root,
                           resumes=[resume] if resume is not None else None,
                           data=[data] if data is not None else None, resume_flags=resume_flags)
    return outcome


def train_group(cfgs: Sequence[RunConfig], *, trackers: Sequence[Tracker],
                reporter: Reporter | None = None,
                member_reporters: Sequence[Reporter] | None = None,
                checkpoint_root: Path = Path("checkpoints"),
                resumes: Sequence[RunState] | None = None,
                data: Sequence[RunData] | None = None,
                resume_flags: str = "") -> list[RunOutcome]:
    """Train `cfgs` together (K > 1: as one fused model); log run k through `trackers[k]`.

    `reporter` shows the group's progress and, without `member_reporters`, each run's epoch
    results (one line per member when K > 1); with them, run k's epoch results go to
    `member_reporters[k]` (a sweep's per-trial rows) and, without `reporter`, the group's
    progress to all of them. `resumes`: the runs' `last` checkpoints (all at one step). With
    one config, a NaN/inf loss raises `NonFiniteLoss`; in a group, that member alone fails.
    """
    if len(cfgs) > 1:
        check_fusable(cfgs)
    if any(len(given) != len(cfgs)
           for given in (trackers, resumes or cfgs, data or cfgs, member_reporters or cfgs)):
        raise ValueError("one tracker (and resume state, data, member reporter) per config")
    reporter = reporter or (FanOut(member_reporters) if member_reporters else NullReporter())
    writes = Background("epoch-writes")  # one queue for the group's files and metrics
    records = [RunRecord(cfg, tracker, checkpoint_root, writes)
               for cfg, tracker in zip(cfgs, trackers)]
    stop = StopFlag()
    # From here on Ctrl-C / SIGTERM only set the flag, even while the data loads: the loop
    # sees it before its first step and every run ends KILLED with a checkpoint to resume
    # (not RUNNING forever, or FAILED). A second Ctrl-C aborts at once.
    with stop.installed():
        _run(records, reporter, member_reporters, resumes, data, stop, resume_flags)
    if len(records) == 1 and records[0].diverged is not None:
        raise records[0].diverged
    return [r.outcome() for r in records]


def _run(records: list[RunRecord], reporter: Reporter,
         member_reporters: Sequence[Reporter] | None, resumes: Sequence[RunState] | None,
         data: Sequence[RunData] | None, stop: StopFlag, resume_flags: str) -> None:
    """Set the members up and train them; whatever fails, every run is closed."""
    try:
        cfgs = [r.cfg for r in records]
        device = resolve_device(cfgs[0].run.device)
        if data is None:
            shared = share_data(cfgs[0].data.dataset, device)  # one device copy for all
            data = [prepare_data(cfg, device, shared) for cfg in cfgs]
        tags = ({FUSED_GROUP_TAG: uuid.uuid4().hex[:12], FUSED_MEMBERS_TAG: str(len(cfgs))}
                if len(cfgs) > 1 else {})
        members = []
        for record, one, state in zip(records, data, resumes or [None] * len(records)):
            if state is not None:
                record.resume(one, state)
            else:
                record.start(one, device, tags)
            members.append(build_member(record, one, device, state))
        group = Group(members, device)
        start, sums = (0, None)
        if resumes:
            start, sums = group.resume(resumes)
            what = (f"run {records[0].run_id}" if len(records) == 1
                    else f"{len(records)} fused runs")
            if resumes[0].finished_training:  # it stopped while it ended (kill -9, disk)
                reporter.message(f"finishing {what}: all its {start} epochs are trained; "
                                 f"logging its summary, figures and checkpoints")
            else:
                reporter.message(f"resuming {what} at epoch {start + 1}, step "
                                 f"{sums.steps_done if sums else 0}")
        shown = member_reporters or ([reporter] if len(records) == 1
                                     else [_NamedLines(reporter, r.name) for r in records])
        _epochs(group, start, sums, stop, reporter, shown, resume_flags)
        for record in (r for r in records if r.status != "FAILED"):
            record.close()
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, without a mid-epoch checkpoint
        for record in (r for r in records if r.status != "FAILED"):
            record.stopped_at_once(resume_flags)
    except BaseException:
        for record in (r for r in records if r.status != "FAILED"):
            record.abort("KILLED" if stop.requested else "FAILED")
        raise
    finally:
        reporter.close()


def _epochs(group: Group, start: int, sums: TrainSums | None, stop: StopFlag,
            reporter: Reporter, shown: Sequence[Reporter], resume_flags: str) -> None:
    """The epoch loop: each member's finished epoch recorded, or its stop."""
    epochs = group.cfg.optim.epochs
    records = [m.record for m in group.members]
    for epoch in range(start, epochs):
        results, sums = group.run_epoch(epoch, sums, stop, reporter, first=epoch == start)
        if results is None:  # interrupted mid-epoch: every member keeps its exact position
            for k, record in enumerate(records):
                if record.active:
                    record.interrupted(epoch, group.weights(k),
                                       group.member_sums(sums, k).state_dict(),
                                       stop.signal_name, resume_flags)
            return
        sums = None
        with records[0].writes.holding():  # every run's copy taken before the writes begin
            for k, (record, metrics) in enumerate(zip(records, results)):
                if not record.active:
                    continue  # failed earlier: its slice of a fused model is not read again
                if isinstance(metrics, NonFiniteLoss):
                    record.failed(metrics)
                    if len(records) > 1:  # alone, the error itself says it
                        reporter.message(f"{record.name}: {record.message}")
                    continue
                record.epoch_ended(epoch, metrics, group.weights(k))
                shown[k].epoch_ended(epoch, epochs, metrics)
        if not any(r.active for r in records):
            return
