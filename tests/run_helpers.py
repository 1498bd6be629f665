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
