"""Checkpoints that follow the run: each epoch's `last.pt` (and `best.pt` when it changes)
uploaded to the run's artifacts in the background, so a run resumes on any machine.

    upload = CheckpointUpload.of(tracker)             # None: the checkpoint folder will do
    upload.epoch(ckpt_dir, epoch, metrics, best_changed=True)   # returns at once
    upload.wait()                                     # before the run's last writes

Why (issue 20): a Ray trial whose node was lost restarted from epoch 1 on another node, in
the same run, logging every early step twice. Runs whose artifacts live on a tracking server
follow, and so do Ray trials (`sweep.worker` sets `tracker.checkpoints_follow`).

An epoch's metrics are logged after its checkpoint is uploaded, so they never run ahead of
it; steps a checkpoint's history holds but the run lacks (the process died between the two
writes) are logged on resume (`backfill`). One upload is in flight at a time. Files are
snapshotted by hard link: the next epoch's `os.replace` gives `last.pt` a new inode.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from cifarctl.tracking import Tracker
from cifarctl.training.background import Background

STEP_METRIC = "train_loss"  # logged every epoch: its steps are the epochs the run has logged
SNAPSHOT_DIR = ".upload"  # beside last.pt: the files of the upload in flight


def follows(tracker: Tracker) -> bool:
    """Whether `tracker`'s run keeps its checkpoints in its artifacts as it trains."""
    return bool(getattr(tracker, "checkpoints_follow", False))


def logged_steps(tracker: Tracker) -> set[int]:
    """The epochs whose metrics the run has logged already (empty for an untracked run)."""
    read = getattr(tracker, "logged_steps", None)
    return set(read(STEP_METRIC)) if read is not None else set()


def backfill(tracker: Tracker, history: list[dict[str, float]], logged: set[int]) -> set[int]:
    """Log the epochs of `history` (a checkpoint's scalar metrics) that the run has no
    metrics for; the epochs it has now."""
    for epoch, metrics in enumerate(history):
        if epoch not in logged:
            tracker.log_metrics(metrics, step=epoch)
    return logged | set(range(len(history)))


def snapshot(files: Iterable[Path], folder: Path) -> list[Path]:
    """Hard links (copies where links fail) of `files` in `folder`, replacing older ones."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for file in files:
        target = folder / file.name
        target.unlink(missing_ok=True)
        try:
            os.link(file, target)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(file, target)
        out.append(target)
    return out


class CheckpointUpload:
    """One run's background uploads: at most one in flight; its error raised at the next
    call (an artifact store that fails is a failed run, not a silent one)."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.jobs = Background("checkpoint-upload")

    @classmethod
    def of(cls, tracker: Tracker) -> CheckpointUpload | None:
        return cls(tracker) if follows(tracker) else None

    def epoch(self, folder: Path, epoch: int, metrics: dict[str, float] | None, *,
              best_changed: bool) -> None:
        """Upload `folder`'s checkpoints of `epoch`, then log its metrics (None: the run has
        them already); returns at once."""
        self.jobs.wait()  # one upload in flight
        names = (["best.pt"] if best_changed else []) + ["last.pt"]
        files = snapshot([folder / n for n in names if (folder / n).is_file()],
                         folder / SNAPSHOT_DIR)

        def job() -> None:
            for file in files:
                self.tracker.log_artifact(file, "checkpoints")
            if metrics is not None:
                self.tracker.log_metrics(metrics, step=epoch)

        self.jobs.start(job)

    def wait(self) -> None:
        """Block until the upload in flight is done; raise its error, if it failed."""
        self.jobs.wait()
