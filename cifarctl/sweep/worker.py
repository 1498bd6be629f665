"""What runs a sweep's trials: the same code in a local worker process and in a Ray task.

    results = run_group([task], sink)      # sink: anything with .put(event)

A worker always attaches to the child run the parent created (`TrialTask.run_id`), resuming
from its last checkpoint if it has one: exactly one child run per trial.

Progress leaves through `sink` as plain tuples `(kind, trial key, payload dict)`:
`started` {pid, epoch}, `epoch` {epoch, epochs, test_acc, ...}, `step` {epoch, steps_done,
steps}, `message` {text}, `result` (a TrialResult as a dict). A group is one trial, or K
compatible trials trained as one fused model (`cifarctl.fused`, issue 8), each still in its
own child run with its own events.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from cifarctl.checkpoint import (
    RunState,
    check_checkpoint_root,
    checkpoint_path,
    load_run_state,
    saved_position,
)
from cifarctl.config import apply_overrides, config_from_dict
from cifarctl.errors import CifarctlError, UsageError, first_line
from cifarctl.names import ATTEMPT_TAG, RAY_NODE_TAG, RESUMED_EPOCH_TAG, RETRIES_TAG
from cifarctl.progress import NullReporter
from cifarctl.sweep.processes import adopt_env
from cifarctl.sweep.spec import trial_key
from cifarctl.sweep.stages import as_planned, resolve_run

STEP_EVERY_S = 1.0  # at most one `step` event a second per trial: the live table's refresh
Event = tuple[str, str, dict[str, Any]]  # (kind, trial key, payload): see the docstring


class Sink(Protocol):
    def put(self, item: Event) -> None: ...


@dataclass(frozen=True)
class TrialTask:
    """Everything a worker needs for one trial; plain values, so it pickles anywhere."""

    key: str
    run_id: str  # the trial's child run, created by the parent
    config: dict[str, Any]  # RunConfig.to_dict()
    tracking_uri: str  # resolved, absolute: workers may run in another directory
    checkpoint_root: str  # absolute
    resume: bool = False  # the run existed before this attempt: look for its checkpoint
    threads: int | None = None  # torch CPU threads: the cores are shared among the workers
    submission: str = ""  # a Ray submission's id: tells Ray's retry from a first attempt

    @property
    def follow(self) -> bool:
        """Checkpoints follow a Ray trial, which may rerun on another node (`training.follow`)."""
        return bool(self.submission)


@dataclass
class TrialResult:
    """How a trial's attempt ended (status as MLflow's: FINISHED, FAILED, KILLED)."""

    key: str
    run_id: str
    status: str
    epochs_done: int = 0
    summary: dict[str, float] = field(default_factory=dict)
    message: str = ""  # one line: why it failed or stopped


# ---- progress -----------------------------------------------------------------------------

class _PendingStop:
    """SIGINT/SIGTERM that arrive before `train` installs its own handler are kept here and
    delivered again once it has (from `QueueReporter.epoch_started`, inside the training
    loop), so a trial stopped while it loads its data still checkpoints and ends KILLED."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, self._handle)

    def replay(self) -> None:
        if self.signum is not None:
            signum, self.signum = self.signum, None
            os.kill(os.getpid(), signum)


PENDING_STOP = _PendingStop()


class QueueReporter(NullReporter):
    """A `cifarctl.progress.Reporter` that sends a trial's progress to the sweep process."""

    def __init__(self, sink: Sink, key: str) -> None:
        self.sink, self.key = sink, key
        self.epoch, self.steps, self.last_step_event = 0, 0, 0.0

    def send(self, kind: str, payload: Mapping[str, Any]) -> None:
        with contextlib.suppress(Exception):  # progress must never break a training run
            self.sink.put((kind, self.key, dict(payload)))

    def message(self, text: str) -> None:
        self.send("message", {"text": text})

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        PENDING_STOP.replay()
        self.epoch, self.steps = epoch, steps

    def step(self, steps_done: int, running: Mapping[str, float] | None) -> None:
        now = time.monotonic()
        if now - self.last_step_event >= STEP_EVERY_S:
            self.last_step_event = now
            self.send("step", {"epoch": self.epoch, "steps_done": steps_done, "steps": self.steps})

    def epoch_ended(self, epoch: int, epochs: int, metrics: Mapping[str, float]) -> None:
        keys = ("train_loss", "train_acc", "val_acc", "test_acc", "epoch_time_s")
        self.send("epoch", {"epoch": epoch, "epochs": epochs,
                            **{k: metrics[k] for k in keys if k in metrics}})


# ---- one trial ----------------------------------------------------------------------------

def _resume_state(task: TrialTask, tracker: Any) -> RunState | None:
    """The run's last checkpoint (local, else its artifact), its epoch tagged on the run (a
    rerun's resume, or a lost node's retry); None if it never saved one."""
    if not task.resume:
        return None
    path = checkpoint_path(Path(task.checkpoint_root), task.run_id)
    if task.follow or not path.is_file():
        # a following run's metrics match its uploaded checkpoint, not a newer local one
        tracker.download_artifact("checkpoints/last.pt", path.parent)
    if not path.is_file():
        return None  # it failed before its first epoch ended: start again, in the same run
    state = load_run_state(path)
    tracker.set_tags({RESUMED_EPOCH_TAG: state.epoch})
    return state


def node_root(root: str) -> str:
    """The checkpoint folder on this node: the driver's, where it can be written here, else
    one in this node's temp folder (a following trial's checkpoints live in its run)."""
    try:
        check_checkpoint_root(Path(root))
    except UsageError:
        return str(Path(tempfile.gettempdir()) / "cifarctl-checkpoints")
    return root


def _trial_config(task: TrialTask, state: RunState | None) -> Any:
    """The checkpoint's config when resuming (checked against the key), else the task's."""
    planned = config_from_dict(task.config)
    if state is None:  # a second stage: its first stage's run, found by trial key
        return resolve_run(planned, task.tracking_uri)
    saved = state.run_config()
    if trial_key(as_planned(saved, planned)) != task.key:
        raise CifarctlError(f"the checkpoint of run {task.run_id} belongs to trial "
                            f"{trial_key(saved)}, not {task.key}; delete the run or its "
                            f"checkpoint folder")
    # where and how fast it runs may change between attempts (not part of the key)
    return apply_overrides(saved, {"run.device": planned.run.device,
                                   "run.compile": planned.run.compile})


def _attempt(tasks: list[TrialTask], sink: Sink) -> list[TrialResult]:
    """Train (or resume) the tasks' trials in their existing child runs, one alone or
    several as one fused group; never raises for the trials."""
    reporters = [QueueReporter(sink, task.key) for task in tasks]
    results = [TrialResult(task.key, task.run_id, "FAILED") for task in tasks]
    trackers: list[Any] = []
    try:
        import torch

        from cifarctl.tracking import open_tracker

        if tasks[0].threads:
            torch.set_num_threads(tasks[0].threads)
        for task in tasks:
            trackers.append(open_tracker(True, experiment="", tracking_uri=task.tracking_uri,
                                         run_id=task.run_id))
            if task.follow:
                trackers[-1].checkpoints_follow = True
        states = [_resume_state(task, tracker) for task, tracker in zip(tasks, trackers)]
        cfgs = [_trial_config(task, state) for task, state in zip(tasks, states)]
        from cifarctl.training import train_group
        from cifarctl.training.stages import prepare_init

        for task, cfg in zip(tasks, cfgs):  # a second stage's first-stage weights, here
            prepare_init(cfg, checkpoint_root=Path(task.checkpoint_root),
                         tracking_uri=task.tracking_uri)
        for reporter, state in zip(reporters, states):
            reporter.send("started", {"pid": os.getpid(), "epoch": state.epoch if state else 0})
        # new trials, or (`_resume_together`) every one continues from its checkpoint
        resumes = None if states[0] is None else states
        outcomes = train_group(cfgs, trackers=trackers, member_reporters=reporters,
                               checkpoint_root=Path(tasks[0].checkpoint_root), resumes=resumes)
        for i, (task, outcome) in enumerate(zip(tasks, outcomes)):
            message = outcome.message
            if outcome.status == "KILLED":  # train's advice (`train --resume`) is not ours
                message = (f"stopped in epoch {outcome.epochs_done + 1} (checkpointed); "
                           f"running the sweep again resumes it")
            results[i] = TrialResult(task.key, task.run_id, outcome.status,
                                     outcome.epochs_done, outcome.summary, message)
    except CifarctlError as err:  # bad data path, NaN loss, unreadable checkpoint, ...
        for result in results:
            result.message = first_line(err)
    except KeyboardInterrupt:  # a second Ctrl-C: train() has marked the run already
        for result in results:
            result.status, result.message = "KILLED", "interrupted twice; stopped at once"
    except Exception as err:  # noqa: BLE001 - a bug or a library failure: keep the traceback
        traceback.print_exc()
        for result in results:
            result.message = f"{type(err).__name__}: {first_line(err)}"
    finally:
        for tracker, result in zip(trackers, results):
            if result.status != "FINISHED":
                # a no-op when train() has ended the run; if it fails, the parent ends it
                with contextlib.suppress(Exception):
                    tracker.finish(result.status)
    for reporter, result in zip(reporters, results):
        reporter.send("result", asdict(result))
    return results


def run_group(tasks: list[TrialTask], sink: Sink) -> list[TrialResult]:
    """Run a group of trials as one fused model (new ones, or resumed ones whose checkpoints
    still agree on their position), else one after the other."""
    if tasks[0].submission:  # a Ray task: a retry resumes what its lost attempt uploaded
        tasks = _retried(tasks, sink)
    if len(tasks) > 1 and PENDING_STOP.signum is None and (
            not any(task.resume for task in tasks) or _resume_together(tasks)):
        return _attempt(tasks, sink)
    results = []
    for task in tasks:
        if PENDING_STOP.signum is not None:  # stopped between trials: leave the rest queued
            results.append(TrialResult(task.key, task.run_id, "KILLED", message="stopped "
                                       "before it started"))
            continue
        results += _attempt([task], sink)
    return results


def _resume_together(tasks: list[TrialTask]) -> bool:
    """Every task continues from a checkpoint here, all at one (epoch, step) as a fused resume
    needs (`Group.resume`): `runner.fused_groups` packed them so, checked again as the files
    may have changed since. A Ray trial's checkpoint follows its run (`TrialTask.follow`):
    those resume one by one."""
    if not all(task.resume and not task.follow for task in tasks):
        return False
    positions = {saved_position(checkpoint_path(Path(task.checkpoint_root), task.run_id))
                 for task in tasks}
    return len(positions) == 1 and None not in positions


def attempt_number(tag: str, submission: str) -> int:
    """The attempt a run's `cifarctl.attempt` tag records for `submission` (0: none yet)."""
    seen, _, n = tag.partition(":")
    return int(n) if seen == submission and n.isdigit() else 0


def begin_attempt(tracking_uri: str, run_id: str, submission: str) -> int:
    """Record this attempt at a submission on the trial's run; how many came before it. Ray
    runs a task again when its worker or node dies (`ray_backend.MAX_RETRIES`) and cannot
    tell it which attempt it is, so the run keeps count ("<submission>:<n>")."""
    from cifarctl.tracking.runstore import RunStore

    store = RunStore(tracking_uri)
    before = attempt_number(store.get_run(run_id).tags.get(ATTEMPT_TAG, ""), submission)
    tags = {ATTEMPT_TAG: f"{submission}:{before + 1}"}
    try:
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - where it runs is a courtesy, not a need
        node = None
    if node:
        tags[RAY_NODE_TAG] = node
    if before:
        tags[RETRIES_TAG] = str(before)
    store.set_tags(run_id, tags)
    return before


def _retried(tasks: list[TrialTask], sink: Sink) -> list[TrialTask]:
    """The tasks of a Ray task, on this node, each to resume if Ray runs it again."""
    out = []
    for task in tasks:
        try:
            again = begin_attempt(task.tracking_uri, task.run_id, task.submission) > 0
        except Exception:  # noqa: BLE001 - the run's own open reports a store that fails
            again = False
        if again:
            QueueReporter(sink, task.key).message("its Ray node or worker was lost: retried, "
                                                  "from the checkpoint it uploaded")
        out.append(replace(task, resume=task.resume or again,
                           checkpoint_root=node_root(task.checkpoint_root)))
    return out


# ---- process entry points -----------------------------------------------------------------

def _watch_parent() -> None:
    """Stop like on SIGTERM (checkpoint, KILLED) if the sweep process goes away, even on
    SIGKILL: a worker never outlives its sweep as an orphan."""
    sweep = multiprocessing.parent_process()  # its end of a pipe closes when it is gone

    def watch() -> None:
        sweep.join()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _log_to(path: Path) -> None:
    """Send this process's stdout and stderr (library warnings, tracebacks) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def worker_log(task: TrialTask) -> Path:
    return Path(task.checkpoint_root) / task.run_id / "worker.log"


def process_main(tasks: list[TrialTask], sink: Any, cuda_devices: str | None,
                 env: dict[str, str]) -> None:
    """Entry of a local worker process (`cifarctl.sweep.processes`): `env` is the sweep's."""
    PENDING_STOP.install()
    adopt_env(env)
    if cuda_devices is not None:  # before CUDA starts: pins this worker to its GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_devices
    _log_to(worker_log(tasks[0]))
    _watch_parent()
    run_group(tasks, sink)
    if not multiprocessing.parent_process().is_alive():
        sink.cancel_join_thread()  # nobody reads the queue any more: do not wait on it
    sink.close()


def ray_main(tasks: list[TrialTask], sink: Any) -> list[dict[str, Any]]:
    """Body of a Ray task (Ray sets CUDA_VISIBLE_DEVICES from the task's `num_gpus`)."""
    PENDING_STOP.install()
    return [asdict(r) for r in run_group(tasks, sink)]
