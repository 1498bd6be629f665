"""One real training run under a time budget: its wall time, epoch times and accuracy as JSON.

    .venv/bin/python benchmarks/lt_run.py --config experiments/resnet32-lt100-ce.yaml \\
        --dataset ../shared/data/cifar10-jpeg.tar.gz --device cuda --budget-s 240 --json lt.json

`cifarctl.training.train` on the config (the published LT-100 protocol of SPEC 2 by default),
untracked. If the next epoch would end past `--budget-s`, the run is stopped the way Ctrl-C
stops it (checkpointed, KILLED) and the JSON says how far it got and what the whole run
would take at the measured pace. `benchmarks/gpu_check.sh` calls it.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from emit import emit

from cifarctl.progress import NullReporter


class BudgetReporter(NullReporter):
    """Stops the run (SIGINT, as Ctrl-C) when another epoch would not fit in the budget,
    counted from `t0`."""

    def __init__(self, budget_s: float, t0: float) -> None:
        self.t0, self.budget_s = t0, budget_s
        self.epoch_s: list[float] = []
        self.messages: list[str] = []
        self.started = self.t0

    def message(self, text: str) -> None:
        self.messages.append(text)

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        self.started = time.perf_counter()

    def epoch_ended(self, epoch: int, epochs: int, metrics: Any) -> None:
        now = time.perf_counter()
        self.epoch_s.append(now - self.started)
        print(f"epoch {epoch + 1}/{epochs}  test_acc {metrics['test_acc']:.4f}  "
              f"{metrics['images_per_s']:.0f} img/s  {now - self.t0:.0f}s", flush=True)
        if epoch + 1 < epochs and now - self.t0 + max(self.epoch_s) > self.budget_s:
            os.kill(os.getpid(), signal.SIGINT)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/resnet32-lt100-ce.yaml")
    parser.add_argument("--dataset", required=True, help="dataset spec or path (tar.gz, dir)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget-s", type=float, default=240.0,
                        help="seconds for loading the data and training; then it stops")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="config override key=value (repeatable)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from cifarctl.config import load_config, parse_set_option
    from cifarctl.data import load_dataset
    from cifarctl.tracking import NullTracker
    from cifarctl.training import train

    overrides = {**parse_set_option(args.sets), "data.dataset": args.dataset,
                 "run.device": args.device}
    cfg = load_config(args.config, overrides)
    t0 = time.perf_counter()
    load_dataset(cfg.data.dataset)  # import and cache first, timed apart from training
    load_s = time.perf_counter() - t0
    reporter = BudgetReporter(args.budget_s, t0)  # the budget includes loading the data
    train_t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as ckpt:
        outcome = train(cfg, tracker=NullTracker(), reporter=reporter, checkpoint_root=Path(ckpt))
    wall = time.perf_counter() - train_t0
    history = outcome.history
    mean_epoch = statistics.mean(reporter.epoch_s) if reporter.epoch_s else None
    result = {
        "config": args.config, "dataset": args.dataset, "device": args.device,
        "status": outcome.status, "epochs_done": len(history), "epochs_planned": cfg.optim.epochs,
        "dataset_load_s": round(load_s, 1), "train_wall_s": round(wall, 1),
        "mean_epoch_s": round(mean_epoch, 3) if mean_epoch else None,
        "projected_total_s": round(mean_epoch * cfg.optim.epochs, 1) if mean_epoch else None,
        "median_images_per_s": (round(statistics.median(h["images_per_s"] for h in history))
                                if history else None),
        "final_test_acc": history[-1]["test_acc"] if history else None,
        "test_acc_at_best": outcome.summary.get("test_acc_at_best"),
        "per_class_test_acc": ([history[-1][f"test_acc_class_{i}"] for i in range(10)]
                               if history else None),
        "messages": reporter.messages,
    }
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
