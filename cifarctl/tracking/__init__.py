"""Where a run's numbers go and how they are read back: the write side (the `Tracker`
interface, a null tracker and the MLflow one) and the read side (`RunStore`).

    tracker = open_tracker(True, experiment="lt100", run_name="resnet32-focal-b0.999-s0")
    tracker.log_metrics({"train_loss": 0.7, "train_acc": 0.8}, step=0)
    tracker.finish("FINISHED")
    runstore.open_store().get_run(tracker.run_id).metrics["train_loss"]   # 0.7

Importing this package does not import MLflow: `open_tracker(False)` (`--no-track`) runs
without it installed, and the MLflow module is loaded only when a run is opened or read.
No module outside this package imports MLflow. `cifarctl --help` imports this package
(`ui` checks stores): the read side stays in `runstore`, imported by those who read.
"""

from __future__ import annotations

from typing import Any

from cifarctl.tracking.base import RUN_STATUSES, NullTracker, Tracker
from cifarctl.tracking.retry import call_with_retry
from cifarctl.tracking.store import check_reachable, resolve_tracking_uri

__all__ = ["RUN_STATUSES", "NullTracker", "Tracker", "call_with_retry", "check_reachable",
           "open_tracker", "resolve_tracking_uri"]


def open_tracker(enabled: bool, **kwargs: Any) -> Tracker:
    """A started MLflow run (`kwargs` as `mlflow_tracker.start_run`), or a NullTracker."""
    if not enabled:
        return NullTracker()
    # a down server is reported before the 2-3 s it takes to import MLflow
    check_reachable(resolve_tracking_uri(kwargs.get("tracking_uri")))
    from cifarctl.tracking.mlflow_tracker import start_run

    return start_run(**kwargs)
