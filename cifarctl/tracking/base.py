"""The tracking interface the training code talks to, and its do-nothing implementation.

    tracker = NullTracker()            # --no-track: same calls, nothing recorded
    tracker.log_metrics({"train_loss": 0.7}, step=0)
    tracker.finish("FINISHED")

`Tracker` is a structural type: anything with these methods is a tracker, so the engine
and training loop never import MLflow (STYLE principle 6, nanoGPT's `DummyWandb`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

# The terminal states MLflow knows (mlflow.entities.RunStatus); FINISHED = success.
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")


@runtime_checkable
class Tracker(Protocol):
    """Where one run's params, tags, metrics, artifacts and datasets go.

    `with tracker:` finishes the run: FINISHED, KILLED on Ctrl-C, FAILED on any other error.
    Explicit `finish` calls win: implementations make a second `finish` a no-op.
    """

    run_id: str | None
    artifact_uri: str | None
    # the status a reopened run had before it was set back to RUNNING (None for a new run):
    # what to restore when a resume is refused
    opened_status: str | None

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def log_figure(self, fig: Any, artifact_file: str) -> None: ...

    def log_dataset(self, name: str, digest: str, source: str, *, context: str = "training",
                    num_rows: int | None = None) -> None: ...

    def download_artifact(self, artifact_path: str, dst_dir: Path | str) -> Path | None: ...

    def finish(self, status: str = "FINISHED") -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.finish("FINISHED" if exc_type is None
                    else "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")


def check_status(status: str) -> str:
    """`status` if it is a terminal run status, else ValueError (a programming mistake)."""
    if status not in RUN_STATUSES:
        raise ValueError(f"run status must be one of {', '.join(RUN_STATUSES)}, got {status!r}")
    return status


class NullTracker(Tracker):
    """Accepts every tracker call and records nothing (the protocol's no-op bodies); needs
    neither MLflow nor a network."""

    run_id: str | None = None
    artifact_uri: str | None = None
    opened_status: str | None = None

    def finish(self, status: str = "FINISHED") -> None:
        check_status(status)
