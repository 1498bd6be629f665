"""What a finished epoch costs besides the training: each run's checkpoints and metrics.

    .venv/bin/python benchmarks/epoch_record.py --runs 6 --epochs 20 --repeat 5

For a fused group of `--runs` resnet32 runs with no validation split (long-tailed CIFAR's
default: every epoch is the selected one, so each is both the run's best and its last),
times `RunRecord.epoch_ended` for every run over `--epochs` epochs, each run logging 48
metrics an epoch to a SQLite MLflow store: (now) the epoch's state serialised once, its
second file a copy, against (reference) both files serialised, as before. The two
alternate, each in a fresh store, `--repeat` times; prints the medians per epoch of the
group and their ratio. On an H200 these host-side seconds came to ~0.5-0.7 s between the
epochs of a six-run group (BENCHMARKS.md, "Bookkeeping between epochs").
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


def one_pass(runs: int, epochs: int, folder: Path, reference: bool) -> float:
    """Median seconds an epoch for `runs` records, into a fresh store in `folder`."""
    import torch

    import cifarctl.training.record as record_module
    from cifarctl.checkpoint import save_run_state
    from cifarctl.config.files import load_config
    from cifarctl.models import create_model
    from cifarctl.tracking.mlflow_tracker import start_run
    from cifarctl.training.record import RunRecord, Weights

    def both_serialised(path: Path, state: Any, *, also: Path | None = None) -> None:
        save_run_state(path, state)
        if also is not None:
            save_run_state(also, state)

    cfg = load_config(Path(__file__).parents[1] / "experiments/resnet32-lt100-ce.yaml")
    model = create_model("resnet32", num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()  # momentum buffers: a checkpoint's real size
    weights = Weights(model.state_dict(), optimizer.state_dict(), {"cpu": torch.get_rng_state()})
    data = types.SimpleNamespace(val=None, fingerprint="bench", name="bench",
                                 train=types.SimpleNamespace(num_samples=10847))
    records = []
    for k in range(runs):
        tracker = start_run(experiment="epoch-record", run_name=f"run{k}",
                            tracking_uri=f"sqlite:///{folder}/mlflow.db")
        records.append(RunRecord(cfg, tracker, folder / "checkpoints"))
        records[-1].data = data
    saved = record_module.save_run_state
    record_module.save_run_state = both_serialised if reference else saved
    try:
        times = []
        for epoch in range(epochs):
            metrics = {name: 1.0 / (epoch + i + 1) for i, name in enumerate(METRICS)}
            start = time.perf_counter()
            for record in records:
                record.epoch_ended(epoch, dict(metrics), weights)
            times.append(time.perf_counter() - start)
    finally:
        record_module.save_run_state = saved
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help="runs in the group (K)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    seconds: dict[str, list[float]] = {"now": [], "reference": []}
    for _ in range(args.repeat):
        for way in seconds:
            with tempfile.TemporaryDirectory() as folder:
                seconds[way].append(one_pass(args.runs, args.epochs, Path(folder),
                                             reference=way == "reference"))
    result: dict[str, Any] = {"runs": args.runs, "epochs": args.epochs, "repeat": args.repeat}
    for way, values in seconds.items():
        result[f"{way}_s_per_epoch"] = round(statistics.median(values), 4)
    result["reference_over_now"] = round(result["reference_s_per_epoch"]
                                         / result["now_s_per_epoch"], 2)
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
