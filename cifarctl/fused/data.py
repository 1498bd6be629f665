"""The batches of K runs at once, each run's exactly as it would see them alone (issue 8).

    batches = FusedBatches([member.train for member in members])   # DeviceLoader views
    for x, y in batches.epoch(3):   # x (B, K 3, 32, 32) float32, y (B, K) int64
        ...

Each member's loader is a `DeviceLoader.subset` view of one shared device copy of the
dataset, with that run's rows, seed, batch size and augmentation, as in an unfused run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from cifarctl.data.mix import unmixed_targets


class FusedBatches:
    """K loaders with the same number of batches of the same size, read in lockstep."""

    def __init__(self, loaders: Sequence[Any]) -> None:
        sizes = {(len(loader), loader.num_samples) for loader in loaders}
        if len(sizes) != 1:
            raise ValueError(f"fused members need splits of one size and batch count, got "
                             f"(batches, images) {sorted(sizes)}")
        self.loaders = list(loaders)

    def __len__(self) -> int:
        return len(self.loaders[0])

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x (B, K 3, H, W) float32, y (B, K) int64): member k's batch in channels 3k..3k+2.
        When a member mixes, y is (B, K, 3) mixed targets, [y, y, 1] for those that do not."""
        for batches in zip(*(loader.epoch(epoch) for loader in self.loaders)):
            xs, ys = zip(*batches)
            if any(y.is_floating_point() for y in ys):  # some members mix (`data.mix`): all
                ys = [y if y.is_floating_point() else unmixed_targets(y) for y in ys]
            yield torch.cat(xs, dim=1), torch.stack(ys, dim=1)
