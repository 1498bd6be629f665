"""Helpers for tests that train: a real Ctrl-C at a chosen step, tiny synthetic datasets.

    stopped = train(cfg, tracker=NullTracker(), reporter=InterruptAt(1, 3), ...)
    data_dir = write_synthetic(tmp_path_factory, "tiny", train_per_class=60, test_per_class=20)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from cifarctl.progress import NullReporter

# A run or eval left at `run.device auto` takes the GPU where there is one (gpu_check.sh runs
# the training and eval test files there) and computes under bf16 autocast there
# (`engine.autocast_for`), whose 8-bit mantissa rounds to about 0.4 %: checks made against
# float32 on the CPU widen to this where BF16 holds (seen on an H200, 2026-12-04: fused vs
# separate train_loss 1.3e-3 apart after an epoch, ECE 1.8e-4).
BF16 = torch.cuda.is_available()


class InterruptAt(NullReporter):
    """Sends this process a real SIGINT at (epoch, step), as Ctrl-C would."""

    def __init__(self, epoch: int, step: int) -> None:
        self.at, self.epoch = (epoch, step), -1

    def epoch_started(self, epoch, epochs, steps):
        self.epoch = epoch

    def step(self, steps_done, running):
        if (self.epoch, steps_done) == self.at:
            os.kill(os.getpid(), signal.SIGINT)


class InterruptTwiceAt(InterruptAt):
    """Ctrl-C, then Ctrl-C again at once: the second raises KeyboardInterrupt right here."""

    def step(self, steps_done, running):
        if (self.epoch, steps_done) == self.at:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)


def write_synthetic(factory: pytest.TempPathFactory, name: str, *, train_per_class: int,
                    test_per_class: int, seed: int = 0) -> Path:
    """A tiny synthetic set written as CIFAR python batches (imported by `--dataset PATH`)."""
    from cifarctl.data.synth import SynthSpec, write_batches

    out = factory.mktemp(name)
    write_batches(out, SynthSpec(train_per_class=train_per_class,
                                 test_per_class=test_per_class, seed=seed))
    return out


def log_one_dataset_from_many_runs_at_once(experiment: str, runs: int = 6,
                                           rounds: int = 3) -> list[str]:
    """`runs` new runs in the current store (MLFLOW_TRACKING_URI) log one dataset at the same
    moment (threads behind a barrier), `rounds` times with a new dataset each; asserts every
    run holds its dataset; returns the errors of the first round that raised any (first lines)."""
    import threading

    from cifarctl.tracking.mlflow_tracker import connect, start_run

    errors: list[str] = []
    for attempt in range(rounds):
        trackers = [start_run(experiment=experiment) for _ in range(runs)]
        barrier = threading.Barrier(runs)

        def log(tracker, name=f"synthetic-{attempt}", barrier=barrier):
            barrier.wait()
            try:
                tracker.log_dataset(name, "f" * 64, "synthetic", num_rows=10)
            except Exception as err:  # noqa: BLE001 - collected for the caller
                errors.append(str(err).splitlines()[0])

        threads = [threading.Thread(target=log, args=(t,)) for t in trackers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            return errors
        for tracker in trackers:
            inputs = connect().get_run(tracker.run_id).inputs.dataset_inputs
            assert [i.dataset.name for i in inputs] == [f"synthetic-{attempt}"]
    return errors
