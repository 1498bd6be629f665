"""What a finished epoch costs besides the training: each run's checkpoints and metrics.

    .venv/bin/python benchmarks/epoch_record.py --runs 6 --epochs 20 --device-s 1 --repeat 5

For a fused group of `--runs` resnet32 runs with no validation split (long-tailed CIFAR's
default: every epoch is both a run's best and its last), each run logging 48 metrics and a
confusion matrix an epoch to a SQLite MLflow store, times a group's epoch as the loop makes
it: `RunRecord.epoch_ended` for every run, then the next epoch's training, stood for by
`--device-s` seconds in which the host thread waits and holds no lock (as it waits for a GPU
that trains; 0: the records alone). (now) the files and metrics are written in the
background while the next epoch trains, against (reference) written before it starts, as
before. The two alternate, each in a fresh store, `--repeat` times; prints the medians of
the wall seconds an epoch and of the seconds the training thread spends in `epoch_ended`,
and their ratios. On an H200 the writes came to ~0.5-0.7 s between the epochs of a six-run
group (BENCHMARKS.md, "Bookkeeping between epochs").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from emit import emit

METRICS = (["train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_time_s",
            "images_per_s"] + [f"test_acc_class_{c}" for c in range(10)]
           + [f"dead_relu_{i}" for i in range(31)])


def inline() -> Any:
    """The reference's queue: each write made at once, in the training thread (held or not)."""
    from cifarctl.training.background import Background

    class Inline(Background):
        def start(self, job: Any) -> None:
            job()

    return Inline("inline")


def one_pass(runs: int, epochs: int, device_s: float, folder: Path,
             reference: bool) -> tuple[float, float]:
    """Median wall seconds of an epoch and median seconds in `epoch_ended`, for `runs`
    records into a fresh store in `folder`."""
    import torch

    from cifarctl.config.files import load_config
    from cifarctl.models import create_model
    from cifarctl.tracking.mlflow_tracker import start_run
    from cifarctl.training.background import Background
    from cifarctl.training.record import RunRecord, Weights

    cfg = load_config(Path(__file__).parents[1] / "experiments/resnet32-lt100-ce.yaml")
    model = create_model("resnet32", num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()  # momentum buffers: a checkpoint's real size
    weights = Weights(model.state_dict(), optimizer.state_dict(), {"cpu": torch.get_rng_state()})
    data = types.SimpleNamespace(val=None, fingerprint="bench", name="bench",
                                 train=types.SimpleNamespace(num_samples=10847))
    # the group's one queue, as `train_group` makes it
    writes = inline() if reference else Background("epoch-writes")
    records = []
    for k in range(runs):
        tracker = start_run(experiment="epoch-record", run_name=f"run{k}",
                            tracking_uri=f"sqlite:///{folder}/mlflow.db")
        records.append(RunRecord(cfg, tracker, folder / "checkpoints", writes))
        records[-1].data = data
    walls, in_records = [], []
    for epoch in range(epochs):
        metrics: dict[str, Any] = {name: 1.0 / (epoch + i + 1) for i, name in enumerate(METRICS)}
        metrics["test_confusion"] = [[epoch + i * j for j in range(10)] for i in range(10)]
        start = time.perf_counter()
        with writes.holding():
            for record in records:  # as the loop does
                record.epoch_ended(epoch, dict(metrics), weights)
        in_records.append(time.perf_counter() - start)
        time.sleep(device_s)  # the next epoch, trained by the device
        walls.append(time.perf_counter() - start)
    for record in records:
        record.flush()
    return statistics.median(walls), statistics.median(in_records)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help="runs in the group (K)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--device-s", type=float, default=1.0,
                        help="seconds the device trains an epoch (the host waits)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    walls: dict[str, list[float]] = {"now": [], "reference": []}
    in_records: dict[str, list[float]] = {"now": [], "reference": []}
    for _ in range(args.repeat):
        for way in walls:
            with tempfile.TemporaryDirectory() as folder:
                wall, blocked = one_pass(args.runs, args.epochs, args.device_s, Path(folder),
                                         reference=way == "reference")
            walls[way].append(wall)
            in_records[way].append(blocked)
    result: dict[str, Any] = {"runs": args.runs, "epochs": args.epochs,
                              "device_s": args.device_s, "repeat": args.repeat}
    for way in walls:
        result[f"{way}_s_per_epoch"] = round(statistics.median(walls[way]), 4)
        result[f"{way}_s_in_records"] = round(statistics.median(in_records[way]), 4)
    result["reference_over_now"] = round(result["reference_s_per_epoch"]
                                         / result["now_s_per_epoch"], 2)
    result["in_records_reference_over_now"] = round(
        result["reference_s_in_records"] / max(result["now_s_in_records"], 1e-9), 1)
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
