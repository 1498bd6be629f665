"""One experiment's runs as JSON: status, epochs, pace and accuracy per run, for a GPU check.

    .venv/bin/python benchmarks/study_summary.py --tracking-uri sqlite:///out/mlflow.db \\
        --experiment lt100-study --json study.json

Reads the store through `RunStore` (no training). Per run (a sweep's parent left out): run id
and name, status, loss, seed, epochs logged, median `epoch_time_s` and `images_per_s`, the
last `test_acc` and `test_acc_at_best`. Top level: how many FINISHED and, at the pace
measured, the whole protocol's projected time with the fused groups running side by side (the
slowest group's epoch time x the planned epochs). `benchmarks/gpu_check.sh` calls it after
its study step and evaluates the first FINISHED run it lists.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from emit import emit


def summarise(uri: str, experiment: str) -> dict[str, Any]:
    from cifarctl.names import PARENT_TAG
    from cifarctl.tracking.runstore import open_store

    store = open_store(uri)
    runs = [run for run in store.find_runs(experiment) if PARENT_TAG in run.tags]
    keys = ["epoch_time_s", "images_per_s", "test_acc"]
    histories = store.metric_histories([run.run_id for run in runs], keys)
    rows = []
    for run in sorted(runs, key=lambda r: r.run_name or ""):
        history = {key: [value for _, value in histories[run.run_id].get(key, [])]
                   for key in keys}
        epoch_s = history["epoch_time_s"]
        rows.append({
            "run_id": run.run_id, "run_name": run.run_name, "status": run.status,
            "loss": run.params.get("loss.name"), "seed": run.params.get("run.seed"),
            "epochs_planned": int(float(run.params.get("optim.epochs", 0))),
            "epochs_done": len(epoch_s),
            "median_epoch_s": round(statistics.median(epoch_s), 3) if epoch_s else None,
            "median_images_per_s": (round(statistics.median(history["images_per_s"]))
                                    if history["images_per_s"] else None),
            "last_test_acc": history["test_acc"][-1] if history["test_acc"] else None,
            "test_acc_at_best": run.metrics.get("test_acc_at_best"),
        })
    paces = [row["median_epoch_s"] for row in rows if row["median_epoch_s"]]
    planned = max((row["epochs_planned"] for row in rows), default=0)
    return {"experiment": experiment, "runs": rows,
            "finished": sum(row["status"] == "FINISHED" for row in rows),
            # members of one fused group share an epoch time; groups run side by side
            "slowest_epoch_s": max(paces) if paces else None,
            "projected_protocol_s": round(max(paces) * planned, 1) if paces else None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = summarise(args.tracking_uri, args.experiment)
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
