"""Running loss, accuracy and images/s for the progress bar, without stalling the device.

    live = LiveStats(reporter, time.perf_counter(), first_step=0, batch=128)
    train_steps(..., on_step=live)

Every LIVE_EVERY steps it starts a non-blocking copy of the running sums to the host and shows
the copy started the time before, which has long arrived: no `.item()` in the step.
"""

from __future__ import annotations

import time

import torch

from cifarctl.engine import TrainSums
from cifarctl.progress import Reporter

LIVE_EVERY = 20  # steps between live-stat refreshes of the progress bar


class LiveStats:
    """The `on_step` callback that feeds the progress bar."""

    def __init__(self, reporter: Reporter, t0: float, first_step: int, batch: int,
                 report_compile: bool = False) -> None:
        # batch: images per step, over all members of a fused group
        self.reporter, self.t0, self.first_step, self.batch = reporter, t0, first_step, batch
        self.pending: torch.Tensor | None = None
        self.report_compile = report_compile

    def __call__(self, sums: TrainSums) -> None:
        if self.report_compile:  # the first compiled step includes compilation: time it once
            self.report_compile = False
            if sums.loss_sum.device.type == "cuda":
                torch.cuda.synchronize()
            self.reporter.message(f"torch.compile: first step took "
                                  f"{time.perf_counter() - self.t0:.1f}s (compilation)")
        if sums.steps_done % LIVE_EVERY:
            self.reporter.step(sums.steps_done, None)
            return
        running = None
        if self.pending is not None:
            loss_sum, correct, seen = self.pending.tolist()
            elapsed = time.perf_counter() - self.t0
            running = {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1),
                       "images_per_s": (sums.steps_done - self.first_step) * self.batch
                       / max(elapsed, 1e-9)}
        # summed over the members of a fused group (sums of shape (K,)): the group's running mean
        stacked = torch.stack([sums.loss_sum, sums.correct, sums.seen]).detach()
        stacked = stacked.reshape(3, -1).sum(1)  # (3,)
        pin = stacked.device.type == "cuda"
        self.pending = torch.empty(3, pin_memory=pin)
        self.pending.copy_(stacked, non_blocking=pin)
        self.reporter.step(sums.steps_done, running)
