"""Run a sweep's plan: skip what is done, fan the rest out to workers, keep every run honest.

    outcome = run_sweep(expand(load_spec("experiments/demo-sweep.yaml")), workers=2)
    outcome.counts   # {"ok": 4, "failed": 0, "skipped": 0, "killed": 0, "not run": 0}

The parent run is found or created before any worker starts (workers never race to create
the experiment), each child just before its group starts. Up to `workers` groups are in flight
on an executor (`LocalExecutor`: a process per group, pinned round-robin to the GPUs;
`RayExecutor`: a Ray task per group). A group is one trial, or up to K trials that train as
one fused model (`fused_groups`, issue 8).

A failed trial is reported and the others go on, unless `fail_fast`: then, as on SIGINT or
SIGTERM, the running trials checkpoint and end KILLED and no more start; a second Ctrl-C kills
the workers. No run is left RUNNING: this process ends the run of a worker that died silently.
"""

from __future__ import annotations

import os
import queue
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cifarctl.checkpoint import checkpoint_path, saved_position
from cifarctl.names import BEST_VAL_ACC, PARENT_TAG, TEST_ACC_AT_BEST
from cifarctl.sweep.live import NullDisplay
from cifarctl.sweep.processes import start_worker, worker_context, worker_env
from cifarctl.sweep.spec import Plan
from cifarctl.sweep.stages import blocked_message, take_ready
from cifarctl.sweep.state import SweepOutcome, TrialState
from cifarctl.sweep.worker import Event, TrialTask, process_main, worker_log

if TYPE_CHECKING:
    from cifarctl.tracking.runstore import RunStore

POLL_S = 0.2  # how long the scheduler waits for progress before it looks around again
STOP_GRACE_S = 120.0  # after a stop, how long workers get to checkpoint before SIGKILL


class Display(Protocol):
    """Where the sweep shows its progress (`cifarctl.sweep.live`)."""

    def update(self, state: TrialState) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class Executor(Protocol):
    """Runs groups of trial tasks somewhere and reports back as events."""

    def free(self) -> int: ...  # how many more groups it takes now
    def busy(self) -> int: ...  # groups in flight
    def submit(self, tasks: list[TrialTask]) -> None: ...
    def poll(self, timeout: float) -> list[Event]: ...
    def stop(self) -> None: ...  # ask every group to checkpoint and stop
    def kill(self) -> None: ...  # stop every group now
    def close(self) -> None: ...


def fused_groups(trials: list[TrialState], fuse: int) -> list[list[TrialState]]:
    """Trials packed, in plan order, into groups of up to `fuse` that can train as one fused
    model (`cifarctl.fused.group_key`): new trials together, and trials continuing in their
    run together when their checkpoints stopped at one (epoch, step) (`TrialState.resume_at`:
    an interrupted fused group's members did). Unfusable trials, and continuing ones with no
    local checkpoint, go alone."""
    from cifarctl.fused import group_key

    groups: list[list[TrialState]] = []
    open_groups: dict[tuple, list[TrialState]] = {}
    for state in trials:
        key = group_key(state.trial.config)
        resumed = state.run_id is not None
        if fuse <= 1 or key is None or (resumed and state.resume_at is None):
            groups.append([state])
            continue
        key = (key, state.resume_at if resumed else None)
        group = open_groups.get(key)
        if group is None or len(group) >= fuse:
            group = open_groups[key] = []
            groups.append(group)
        group.append(state)
    return groups


# ---- local processes --------------------------------------------------------------------

def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def pin_gpu(slot: int, gpus: list[str]) -> str | None:
    """Worker slot -> its GPU, round-robin (several slots share a GPU when slots > GPUs)."""
    return gpus[slot % len(gpus)] if gpus else None


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class LocalExecutor:
    """Up to `workers` processes at once, each running one group then exiting, so that a crash
    (out of memory, segfault) stays in it; how they start: `cifarctl.sweep.processes`."""

    def __init__(self, workers: int, gpus: list[str]) -> None:
        self.ctx = worker_context()
        self.queue = self.ctx.Queue()
        self.gpus, self.workers = gpus, workers
        self.slots: dict[int, tuple[Any, list[TrialTask]]] = {}  # slot -> (process, tasks)
        self.unstarted: list[Event] = []  # "exit" events of groups whose process never began

    def free(self) -> int:
        return self.workers - len(self.slots)

    def busy(self) -> int:
        return len(self.slots)

    def submit(self, tasks: list[TrialTask]) -> None:
        slot = min(set(range(self.workers)) - set(self.slots))
        process = self.ctx.Process(target=process_main, daemon=True,
                                   args=(tasks, self.queue, pin_gpu(slot, self.gpus), worker_env()),
                                   name=f"cifarctl-sweep-{tasks[0].key}")
        why = start_worker(process)
        if why is not None:
            self.unstarted += [("exit", task.key, {"error": why}) for task in tasks]
            return
        self.slots[slot] = (process, tasks)

    def _drain(self, timeout: float) -> list[Event]:
        events = []
        try:
            events.append(self.queue.get(timeout=timeout))
            while True:
                events.append(self.queue.get_nowait())
        except queue.Empty:
            return events

    def poll(self, timeout: float) -> list[Event]:
        events, self.unstarted = self.unstarted, []
        events += self._drain(0 if events else timeout)  # no wait when some are known
        ended = [s for s, (p, _) in self.slots.items() if p.exitcode is not None]
        if ended:
            events += self._drain(0.05)  # what the finished workers sent before exiting
        for slot in ended:
            process, tasks = self.slots.pop(slot)
            process.join()
            for task in tasks:
                events.append(("exit", task.key, {
                    "error": f"worker exited with code {process.exitcode}; its output is in "
                             f"{worker_log(task)}"}))
        return events

    def stop(self) -> None:
        for process, _ in self.slots.values():
            if process.exitcode is None:
                process.terminate()  # SIGTERM: the trial checkpoints and ends KILLED

    def kill(self) -> None:
        for process, _ in self.slots.values():
            if process.exitcode is None:
                process.kill()

    def close(self) -> None:
        self.kill()
        for process, _ in self.slots.values():
            process.join()
        self.queue.close()


# ---- the scheduler ----------------------------------------------------------------------

class _Sweep:
    """One attempt at a plan: the bookkeeping between the executor's events and MLflow."""

    def __init__(self, plan: Plan, store: RunStore, executor: Executor, display: Display, *,
                 make_task: Callable[[TrialState, bool], TrialTask], fail_fast: bool,
                 fuse: int = 1, checkpoint_root: Path | None = None) -> None:
        """`checkpoint_root`: where the workers find the checkpoints of trials to continue,
        read for their positions (None: elsewhere, e.g. on a Ray cluster's nodes)."""
        from cifarctl.sweep.lease import held_elsewhere
        from cifarctl.sweep.store import open_sweep

        self.plan, self.store, self.executor, self.display = plan, store, executor, display
        self.make_task, self.fail_fast, self.fuse = make_task, fail_fast, fuse
        runs = open_sweep(store, plan)
        self.outcome = SweepOutcome(plan, runs.parent_id, [TrialState(t) for t in plan.trials])
        self.by_key = {s.trial.key: s for s in self.outcome.trials}
        others: Counter[str] = Counter()  # another sweep's parent run id -> trials it FINISHED
        for state in self.outcome.trials:
            child = runs.children.get(state.trial.key)
            if child is None:
                continue
            state.run_id = child.run_id
            if child.status == "FINISHED":
                parent = child.tags.get(PARENT_TAG, "")
                state.status, state.message = "skipped", "FINISHED in an earlier attempt"
                if parent != runs.parent_id:  # an earlier, smaller spec (`store.existing_runs`)
                    state.message = f"FINISHED in another sweep (parent run {parent})"
                    others[parent] += 1
                state.summary = {k: v for k, v in child.metrics.items()
                                 if k in (TEST_ACC_AT_BEST, BEST_VAL_ACC)}
            elif (held := held_elsewhere(child)) is not None:  # a driver that lost its claim
                state.status, state.message = "not run", held
            else:
                state.message = f"{child.status} before: continues in its run"
                # the position decides which continuing trials fuse again
                if fuse > 1 and checkpoint_root is not None:
                    state.resume_at = saved_position(checkpoint_path(checkpoint_root,
                                                                     child.run_id))
        skipped = self.outcome.counts["skipped"]
        if skipped:
            where = [f"parent run {runs.parent_id}"] if skipped > others.total() else []
            where += [f"{n} by another sweep, parent run {parent}" for parent, n in others.items()]
            total = len(plan.trials)
            display.message(f"skipping {skipped} of {total} trial{'s' * (total != 1)} already "
                            f"FINISHED ({'; '.join(where)})")
        self.stopping, self.stop_deadline, self.killed = False, 0.0, False

    def start(self, group: list[TrialState]) -> None:
        from cifarctl.sweep.store import create_child

        tasks = []
        for state in group:
            resume = state.run_id is not None
            if not resume:
                state.run_id = create_child(self.store, self.plan, state.trial,
                                            self.outcome.parent_run_id)
            state.status = "running"
            tasks.append(self.make_task(state, resume))
            self.display.update(state)
        self.executor.submit(tasks)

    def next_group(self, pending: list[list[TrialState]]) -> list[TrialState] | None:
        """The first pending group that can start now (`stages.take_ready`)."""
        group, blocked = take_ready(pending, self.by_key)
        for state in blocked:
            state.status, state.message = "not run", blocked_message(state, self.by_key)
            self.display.update(state)
        return group

    def handle(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        state = self.by_key[key]
        if kind == "started":
            state.pid, state.epoch = payload["pid"], payload["epoch"]
            state.epochs = state.trial.config.optim.epochs
        elif kind == "epoch":
            state.epoch, state.epochs = payload["epoch"] + 1, payload["epochs"]
            state.acc, state.step = payload.get("test_acc"), None
        elif kind == "step":
            state.step = (payload["steps_done"], payload["steps"])
        elif kind == "message":
            state.message = payload["text"]
        elif kind == "result":
            self.finish(state, payload["status"], payload["message"], payload["summary"])
        elif kind == "exit" and state.status == "running":  # died without a result
            self.finish(state, "KILLED" if self.stopping else "FAILED", payload["error"], {})
        self.display.update(state)

    def finish(self, state: TrialState, status: str, message: str,
               summary: dict[str, float]) -> None:
        from cifarctl.sweep.store import end_if_running

        state.status = {"FINISHED": "ok", "FAILED": "failed", "KILLED": "killed"}[status]
        state.message, state.summary, state.step = message, summary, None
        if state.run_id is not None:
            end_if_running(self.store, state.run_id, status)
        if state.status == "failed" and self.fail_fast and not self.stopping:
            self.request_stop(f"--fail-fast: trial {state.trial.key} failed; stopping the "
                              f"others (they can resume)")

    def kill(self, why: str) -> None:
        self.display.message(f"{why}: killing the workers now")
        self.executor.kill()
        self.killed = True

    def request_stop(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.stop_deadline = time.monotonic() + STOP_GRACE_S
        self.display.message(why)
        self.executor.stop()

    def run(self, stop: Any) -> SweepOutcome:
        """Schedule to the end. `stop`: training's StopFlag, set by the first SIGINT/SIGTERM;
        a second Ctrl-C raises KeyboardInterrupt in here."""
        queued = [s for s in self.outcome.trials if s.status == "queued"]
        pending = fused_groups(queued, self.fuse)
        for state in self.outcome.trials:
            self.display.update(state)
        while (pending and not self.stopping) or self.executor.busy():
            try:
                while (pending and not (self.stopping or stop.requested)
                       and self.executor.free() > 0):
                    group = self.next_group(pending)
                    if group is None:  # every pending trial waits for its stage-1 trial
                        break
                    self.start(group)
                if stop.requested and not self.outcome.interrupted:  # before the events: a
                    self.outcome.interrupted = True  # worker gone since is KILLED, not FAILED
                    self.request_stop(f"{stop.signal_name}: stopping the running trials (they "
                                      f"checkpoint; Ctrl-C again kills them); run the same "
                                      f"command again to resume")
                for event in self.executor.poll(POLL_S):
                    self.handle(*event)
            except KeyboardInterrupt:
                self.kill("a second Ctrl-C")
            if self.stopping and not self.killed and time.monotonic() > self.stop_deadline:
                self.kill(f"workers still running {STOP_GRACE_S:.0f} s after the stop")
        for state in self.outcome.trials:
            if state.status == "queued":
                state.status, state.message = "not run", "not started: the sweep stopped"
                self.display.update(state)
        return self.outcome


def run_sweep(plan: Plan, *, workers: int | None = None, backend: str = "local",
              address: str | None = None, gpus_per_trial: float | None = None,
              cpus_per_trial: float = 1.0, fail_fast: bool = False,
              tracking_uri: str | None = None, checkpoint_root: Path = Path("checkpoints"),
              display: Display | None = None, fuse: int | None = None,
              preflight: bool = True) -> SweepOutcome:
    """Run every trial of `plan` not yet FINISHED. `preflight`: False when the caller has run
    `sweep.preflight` already. `fuse`: trials per fused model; None: from the free GPU memory
    (`cifarctl.fused.capacity.default_fuse`; 1 on the CPU)."""
    from cifarctl.sweep.lease import Heartbeat
    from cifarctl.sweep.store import finish_parent
    from cifarctl.tracking import resolve_tracking_uri
    from cifarctl.tracking.runstore import open_store
    from cifarctl.training.signals import StopFlag  # the signal handling `train` uses

    uri = resolve_tracking_uri(tracking_uri)
    root = checkpoint_root.absolute()
    if preflight:  # before a parent run is created or touched
        from cifarctl.sweep.preflight import preflight as check_here

        check_here(plan, uri, root, devices=backend == "local")  # a cluster's GPUs are its own
    display = display or NullDisplay()
    if backend == "ray":
        from cifarctl.sweep.ray_backend import RayExecutor

        executor: Executor = RayExecutor(
            address, uri, workers=workers, gpus_per_trial=gpus_per_trial,
            cpus_per_trial=cpus_per_trial, message=display.message, log_dir=root)
        threads = max(1, int(cpus_per_trial))
    else:
        workers = workers or 1
        executor = LocalExecutor(workers, visible_gpus())
        threads = max(1, cpu_count() // workers)

    def make_task(state: TrialState, resume: bool) -> TrialTask:
        return TrialTask(state.trial.key, state.run_id or "", state.trial.config.to_dict(), uri,
                         str(root), resume=resume, threads=threads)

    if fuse is None:
        from cifarctl.fused.capacity import default_fuse

        fuse = default_fuse(plan.trials[0].config.run.device if plan.trials else "cpu",
                            sharing=workers or 1)
    try:
        sweep = _Sweep(plan, open_store(uri), executor, display, make_task=make_task,
                       fail_fast=fail_fast, fuse=fuse,
                       checkpoint_root=root if backend == "local" else None)
        stop = StopFlag()
        with stop.installed(), Heartbeat(sweep.store, sweep.outcome, stop) as beat:
            outcome = sweep.run(stop)
    finally:
        executor.close()
        display.close()
    if beat.lost is None:  # else the parent is the other driver's now
        finish_parent(sweep.store, outcome)
    return outcome
