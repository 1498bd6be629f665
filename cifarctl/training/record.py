"""RunRecord: the one writer of one run, tracked in MLflow or not.

    record = RunRecord(cfg, tracker, checkpoint_root)
    record.start(data, device)                       # params, tags, description, dataset input
    record.epoch_ended(epoch, metrics, weights)      # metrics, best-epoch selection, checkpoints
    record.close()                                   # summary metrics, figures, status

Everything a run leaves behind goes through here (ARCHITECTURE.md, "Training"). A fused group
of K runs is K records; the loop decides when each is called, never what is written.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from cifarctl import __version__
from cifarctl.checkpoint import Best, RunState, save_run_state
from cifarctl.config import RunConfig
from cifarctl.errors import UsageError
from cifarctl.names import (
    BEST_EPOCH,
    BEST_VAL_ACC,
    BEST_VAL_EPOCH,
    CLASS_ACC_AT_BEST,
    FINAL_EPOCH_NO_SAVE_BEST,
    FINAL_EPOCH_NO_VAL,
    INIT_FROM_TAG,
    LOCAL_RUN_PREFIX,
    SELECTION_TAG,
    TEST_ACC_AT_BEST,
    TEST_LOSS_AT_BEST,
    TRAINER_TAG,
    run_name,
)
from cifarctl.tracking import Tracker
from cifarctl.tracking.owner import owner
from cifarctl.training.background import Background
from cifarctl.training.data import RunData
from cifarctl.training.device import device_name
from cifarctl.training.follow import CheckpointUpload, backfill, logged_steps

if TYPE_CHECKING:
    from cifarctl.training.group import NonFiniteLoss


@dataclass
class RunOutcome:
    """What a run ended with: plain values for the CLI, sweeps and tests."""

    run_id: str
    status: str  # FINISHED | FAILED | KILLED
    epochs_done: int
    history: list[dict[str, float]]
    summary: dict[str, float] = field(default_factory=dict)
    checkpoint_dir: Path | None = None
    message: str = ""


@dataclass
class Weights:
    """A checkpoint's unfused model and optimizer state dicts and its run's global RNG state."""

    model: dict[str, Any]
    optimizer: dict[str, Any]
    rng: dict[str, Any]

    def on_host(self) -> Weights:
        """A host copy, which the next epoch's steps cannot change while it is written."""
        return Weights(*(_copied(part) for part in (self.model, self.optimizer, self.rng)))


def _copied(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copied(v) for v in value)
    return value


def select_best(cfg: RunConfig, best: Best, epoch: int, metrics: dict[str, Any],
                has_val: bool) -> Best:
    """Select on validation, never on test; without a validation split, the last epoch."""
    key = cfg.run.select_metric
    if not has_val or not cfg.run.save_best:
        return Best(metrics.get(key), epoch, metrics)
    value = metrics[key]
    better = best.value is None or (value > best.value if key.endswith("acc")
                                    else value < best.value)
    return Best(value, epoch, metrics) if better else best


def summary_metrics(best: Best, num_classes: int) -> dict[str, float]:
    """The metrics logged once at the end, at step `best.epoch`."""
    m = best.metrics
    if not m:
        return {}
    out = {BEST_EPOCH: float(best.epoch), TEST_ACC_AT_BEST: m["test_acc"],
           TEST_LOSS_AT_BEST: m["test_loss"]}
    if "val_acc" in m:
        out[BEST_VAL_ACC] = m["val_acc"]
    return out | {CLASS_ACC_AT_BEST.format(i=i): m[f"test_acc_class_{i}"]
                  for i in range(num_classes)}


def loggable(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics (not `test_confusion`, a nested list)."""
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def check_same_data(run_id: str, saved_fingerprint: str | None, data: RunData,
                    spec: str) -> None:
    """Refuse to resume on data other than the run trained on (a regenerated synthetic set,
    a re-imported folder): one run's metrics would come from two datasets."""
    if saved_fingerprint is not None and saved_fingerprint != data.fingerprint:
        raise UsageError(f"run {run_id} trained on {spec} with fingerprint "
                         f"{saved_fingerprint}, but {spec} is now {data.fingerprint} "
                         f"(regenerated or re-imported?); a resume would mix two datasets "
                         f"in one run: train a new run instead")


def _git(*args: str) -> str | None:
    """`git ARGS` in cifarctl's own checkout; None outside one (an installed wheel)."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_tags(cfg: RunConfig, data: RunData, device: torch.device) -> dict[str, str]:
    """The tags a new run gets (ARCHITECTURE.md, "Training")."""
    tags = {
        "dataset": data.name, "dataset_fingerprint": data.fingerprint, TRAINER_TAG: owner(),
        "class_counts": ",".join(map(str, data.train_counts)),
        "class_names": ",".join(data.classes), "device": device_name(device),
        "torch_version": torch.__version__, "cifarctl_version": __version__,
        # a CPU run's numbers depend on its thread count (README, "Sweeps")
        "torch_threads": str(torch.get_num_threads()),
        # filter tags for the MLflow UI (issue 9)
        "model": cfg.model.name, "loss": cfg.loss.name, "beta": f"{cfg.loss.beta:g}",
        "gamma": f"{cfg.loss.gamma:g}", "imbalance": f"{cfg.data.imbalance:g}",
        "seed": str(cfg.run.seed),
        SELECTION_TAG: (BEST_VAL_EPOCH if data.val is not None and cfg.run.save_best
                        else FINAL_EPOCH_NO_VAL if data.val is None
                        else FINAL_EPOCH_NO_SAVE_BEST),
    }
    if cfg.run.init_from is not None:  # a second stage: the run it started from (issue 18)
        tags[INIT_FROM_TAG] = cfg.run.init_from
    if data.source:
        tags["dataset_source"] = json.dumps(data.source, sort_keys=True)
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["git_commit"] = commit
        # edits to tracked files since that commit: the commit alone is not what ran
        changes = _git("status", "--porcelain", "--untracked-files=no")
        if changes is not None:
            tags["git_dirty"] = "true" if changes else "false"
    return tags


class RunRecord:
    """One run's history, best epoch, checkpoints and tracked record."""

    def __init__(self, cfg: RunConfig, tracker: Tracker, checkpoint_root: Path,
                 writes: Background | None = None) -> None:
        self.cfg, self.tracker = cfg, tracker
        self.run_id = tracker.run_id or f"{LOCAL_RUN_PREFIX}{uuid.uuid4().hex[:12]}"
        self.checkpoint_root, self.dir = checkpoint_root, checkpoint_root / self.run_id
        self.data: RunData | None = None
        self.best, self.history = Best(), []
        self.status, self.message, self.summary = "RUNNING", "", {}
        self.diverged: NonFiniteLoss | None = None  # its loss turned NaN/inf
        # checkpoints uploaded each epoch (a tracking server, a Ray trial), and the epochs
        # the run has metrics for already (an earlier attempt that kept no checkpoint)
        self.upload = CheckpointUpload.of(tracker)
        self.logged: set[int] = set()
        # an epoch's checkpoints and metrics are written while the next one trains (on a GPU
        # ~0.1 s of host time a run an epoch: BENCHMARKS.md); `writes`: a fused group's queue
        self.writes = writes or Background("epoch-writes")

    @property
    def name(self) -> str:
        return run_name(self.cfg)

    @property
    def active(self) -> bool:
        return self.status == "RUNNING"

    def start(self, data: RunData, device: torch.device,
              extra_tags: dict[str, str] | None = None) -> None:
        self.data = data
        self.tracker.log_params(self.cfg.to_flat())
        self.tracker.set_tags(run_tags(self.cfg, data, device) | (extra_tags or {}))
        self.tracker.log_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False),
                              "config.yaml")
        self.tracker.log_dataset(data.name, data.fingerprint, self.cfg.data.dataset,
                                 num_rows=data.train.num_samples)
        self.logged = logged_steps(self.tracker)  # a restart in a run that kept no checkpoint

    def resume(self, data: RunData, state: RunState) -> None:
        """A run continued from `state`: same data, this process trains it now."""
        check_same_data(self.run_id, state.dataset_fingerprint, data, self.cfg.data.dataset)
        self.data = data
        self.tracker.set_tags({TRAINER_TAG: owner()})
        self.best, self.history = state.best, list(state.history)
        self.logged = backfill(self.tracker, [loggable(m) for m in self.history],
                               logged_steps(self.tracker))
        if state.finished_training:  # stopped while it ended: an upload may be missing
            self.upload = None  # so the end logs both checkpoints from here

    def state(self, weights: Weights, epoch: int, sums: dict[str, Any] | None) -> RunState:
        """The checkpoint to continue with `epoch` (`sums`: an interrupted epoch's)."""
        assert self.data is not None
        return RunState(model=weights.model, optimizer=weights.optimizer,
                        config=self.cfg.to_dict(), epoch=epoch, best=self.best,
                        history=list(self.history), sums=sums, rng=weights.rng,
                        dataset_fingerprint=self.data.fingerprint,
                        cifarctl_version=__version__)

    def epoch_ended(self, epoch: int, metrics: dict[str, Any], weights: Weights) -> None:
        """Record a finished epoch; its files and metrics are written in the background
        (`flush` waits for them)."""
        assert self.data is not None
        self.writes.wait()  # the epoch before first (a group's: all its runs'); its error
        # fails the run here
        self.history.append(metrics)
        self.best = select_best(self.cfg, self.best, epoch, metrics, self.data.val is not None)
        state = self.state(weights.on_host(), epoch + 1, None)
        best_changed = self.best.epoch == epoch
        # once per step (a restart without a checkpoint logs no step twice)
        unlogged = None if epoch in self.logged else loggable(metrics)
        self.writes.start(lambda: self._write_epoch(state, epoch, unlogged, best_changed))

    def _write_epoch(self, state: RunState, epoch: int, unlogged: dict[str, float] | None,
                     best_changed: bool) -> None:
        if best_changed:  # best first: `last` never names a best not yet saved
            save_run_state(self.dir / "best.pt", state, also=self.dir / "last.pt")
        else:
            save_run_state(self.dir / "last.pt", state)
        # the metrics after the checkpoint (and its upload, which an epoch logged before
        # still makes: issue 20), so they never run ahead of what a resume starts from
        if self.upload is not None:
            self.upload.epoch(self.dir, epoch, unlogged, best_changed=best_changed)
        elif unlogged is not None:
            self.tracker.log_metrics(unlogged, step=epoch)

    def flush(self, *, keep_error: bool = False) -> None:
        """Wait for the last epoch's writes (and upload); raise their error, if any (with
        `keep_error`, a write's error is left to the group's next wait)."""
        self.writes.wait(keep_error=keep_error)
        if self.upload is not None:
            self.upload.wait()

    def interrupted(self, epoch: int, weights: Weights, sums: dict[str, Any],
                    signal_name: str, resume_flags: str) -> None:
        """Ctrl-C / SIGTERM mid-epoch: a checkpoint at the exact step, status KILLED."""
        self.writes.wait()  # the epoch boundary's last.pt must not land after this one
        save_run_state(self.dir / "last.pt", self.state(weights, epoch, sums))
        self.status = "KILLED"
        self.message = (f"interrupted by {signal_name} in epoch {epoch + 1}; resume with "
                        f"`{resume_command(self.run_id, resume_flags)}`")

    def failed(self, diverged: NonFiniteLoss) -> None:
        """The run diverged (its loss turned NaN/inf); the last good checkpoint is kept and
        logged."""
        self.status, self.message, self.diverged = "FAILED", str(diverged), diverged
        self.abort("FAILED")

    def close(self) -> None:
        """End a run that did not fail: summary metrics, figures, checkpoints, status."""
        self.flush()  # the last epoch's checkpoint and metrics first
        if self.status == "RUNNING":
            self.status = "FINISHED"
        if self.data is not None:
            self.summary = summary_metrics(self.best, len(self.data.classes))
            self._log_end()
        self.tracker.finish(self.status)

    def _log_end(self) -> None:
        from cifarctl import plots

        assert self.data is not None
        data, tracker, m = self.data, self.tracker, self.best.metrics
        if self.summary:
            tracker.log_metrics(self.summary, step=self.best.epoch)
        if self.history:
            tracker.log_figure(plots.training_curves(self.history), "training_curves.png")
            accs = [m[f"test_acc_class_{i}"] for i in range(len(data.classes))]
            rows = ["class,name,train_count,test_acc"] + [
                f"{i},{name},{n},{acc:.6f}"
                for i, (name, n, acc) in enumerate(zip(data.classes, data.train_counts, accs))]
            tracker.log_text("\n".join(rows) + "\n", "per_class_accuracy.csv")
            tracker.log_figure(plots.per_class_accuracy(
                data.classes, accs, data.train_counts,
                title=f"test accuracy, epoch {self.best.epoch + 1}"), "per_class_accuracy.png")
            tracker.log_figure(plots.confusion_matrix(m["test_confusion"], data.classes),
                               "confusion_matrix.png")
            # the numbers behind the PNG, for `cifarctl report`'s side-by-side matrices
            tracker.log_text(json.dumps(m["test_confusion"]) + "\n", "confusion_matrix.json")
        # uploads that followed the run hold both already, unless an interruption saved a
        # mid-epoch last.pt since
        uploaded = () if self.upload is None else (
            ("best",) if self.status == "KILLED" else ("best", "last"))
        for which in ("best", "last"):
            if which not in uploaded and (self.dir / f"{which}.pt").is_file():
                tracker.log_artifact(self.dir / f"{which}.pt", "checkpoints")

    def abort(self, status: str) -> None:
        """Close the run after an error without masking that error."""
        with contextlib.suppress(Exception):  # the last good epoch's files (and upload)
            self.flush(keep_error=True)
        with contextlib.suppress(Exception):  # the original error is the one to report
            if self.upload is None and (self.dir / "last.pt").is_file():
                self.tracker.log_artifact(self.dir / "last.pt", "checkpoints")
            self.tracker.finish(status)

    def stopped_at_once(self, resume_flags: str) -> None:
        """A second Ctrl-C: ended KILLED now, without a mid-epoch checkpoint."""
        self.abort("KILLED")
        self.status = "KILLED"
        self.message = f"interrupted twice: stopped at once in epoch {len(self.history) + 1}" + (
            f"; resume from its last checkpoint with `{resume_command(self.run_id, resume_flags)}`"
            if (self.dir / "last.pt").is_file() else "; it saved no checkpoint yet: train it again")

    def outcome(self) -> RunOutcome:
        return RunOutcome(self.run_id, self.status, len(self.history), self.history,
                          self.summary, self.dir, self.message)


def resume_command(run_id: str, flags: str = "") -> str:
    """`cifarctl train --resume RUN_ID [flags]`: the advice a stopped run prints."""
    return f"cifarctl train --resume {run_id}" + (f" {flags}" if flags else "")
