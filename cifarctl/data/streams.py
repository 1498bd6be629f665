"""Seeded random streams of the data pipeline: each a pure function of (seed, epoch, stream).

    order = device_generator(seed, epoch, ORDER, device)   # torch.Generator on the device
    rng = host_generator(seed, epoch, MIX)                  # numpy Generator on the host

Each use draws from its own stream, so turning one augmentation on leaves the others' draws
(and a crop-flip run's batches) exactly as they were. Draws made on the host (which
operations an image gets, mixing's lambda and boxes) are the same on every device.
"""

from __future__ import annotations

import numpy as np
import torch

# stream ids: never renumber (a run resumed by a later version must draw what it drew)
ORDER, AUGMENT, POLICY, CUTOUT, MIX = 0, 1, 2, 3, 4


def _seed(seed: int, epoch: int, stream: int) -> int:
    # SeedSequence mixes (seed, epoch, stream) into well-separated seeds, so (seed 0, epoch 1)
    # and (seed 1, epoch 0) do not collide as they would with seed + epoch.
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0])


def device_generator(seed: int, epoch: int, stream: int, device: torch.device) -> torch.Generator:
    """A torch.Generator on `device` for one epoch of one stream."""
    return torch.Generator(device).manual_seed(_seed(seed, epoch, stream) & (2**63 - 1))


def host_generator(seed: int, epoch: int, stream: int) -> np.random.Generator:
    """A numpy Generator for one epoch of one stream (draws that decide, on the host, what
    the device does to a batch)."""
    return np.random.default_rng(_seed(seed, epoch, stream))


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on `device`; on CUDA from pinned memory without a host sync."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
