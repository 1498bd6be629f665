"""Four real processes log to one sqlite store at once, as `sweep --workers 4` does (issue 5).

Nothing may be lost to "database is locked": every run, param and metric point must land.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

WORKERS = 4
BATCHES = 50  # one per "epoch"
METRICS = 8  # per batch

# Each worker waits for the file `go` after its imports, so that all four write together.
WORKER = """
import os, sys, time
from cifarctl.tracking.mlflow_tracker import start_run

parent, index, batches, metrics = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
open(f"ready-{index}", "w").close()
while not os.path.exists("go"):
    time.sleep(0.01)
tracker = start_run(experiment="sweep", run_name=f"trial-{index}", parent_run_id=parent,
                    tags={"trial": index})
tracker.log_params({f"param_{i}": i for i in range(20)})
for step in range(batches):
    tracker.log_metrics({f"metric_{i}": step * 100 + i for i in range(metrics)}, step=step)
tracker.finish("FINISHED")
"""


@pytest.mark.slow
def test_four_processes_lose_nothing(mlflow_store):
    from cifarctl.tracking.mlflow_tracker import start_run
    from cifarctl.tracking.runstore import open_store

    # as the sweep does: experiment and parent exist before the workers fan out
    parent = start_run(experiment="sweep", run_name="parent")
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, parent.run_id, str(i),
                                 str(BATCHES), str(METRICS)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(WORKERS)]
    deadline = time.monotonic() + 60
    while not all((mlflow_store.db.parent / f"ready-{i}").exists() for i in range(WORKERS)):
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers)
        time.sleep(0.05)
    (mlflow_store.db.parent / "go").touch()
    outputs = [w.communicate(timeout=180) for w in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
        assert "Traceback" not in err and "database is locked" not in err, err
    parent.finish()

    store = open_store()
    runs = store.children(parent.run_id)
    assert sorted(r.tags["trial"] for r in runs) == [str(i) for i in range(WORKERS)]
    for run in runs:
        assert run.status == "FINISHED"
        assert len(run.params) == 20
        for i in range(METRICS):
            assert store.metric_history(run.run_id, f"metric_{i}") == [
                (step, step * 100 + i) for step in range(BATCHES)]
