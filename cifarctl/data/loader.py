"""The whole split on the device, batches as index tensors, augmentation as batched math.

    loader = DeviceLoader(images, labels, batch_size=128, shuffle=True, augment=True,
                          drop_last=False, seed=0, device="cuda")
    for x, y in loader.epoch(3):   # x (B, 3, 32, 32) float32 normalised, y (B,) int64
        ...

After KellerJordan/cifar10-airbench (STYLE.md): the uint8 images are copied to the device
once (50,000 CIFAR images are 150 MB), each batch gathers its rows by index, and the
protocol's augmentation (SPEC 2: random crop with 4-pixel zero padding, horizontal flip)
is one gather per batch. There is no per-image Python, no PIL and no worker process.
Order and augmentation are a pure function of (seed, epoch) through explicit
`torch.Generator`s, so a run resumed at epoch k sees exactly the batches it would have.
The recipe's stages (issue 19) hook in after crop + flip: a policy and Cutout
(`cifarctl.data.augment`), and after normalising, mixup / CutMix (`cifarctl.data.mix`).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator

import numpy as np
import torch

from cifarctl.data.augment import AugmentSpec, epoch_policy, policy_chunks
from cifarctl.data.mix import BatchMixer, MixSpec
from cifarctl.data.streams import AUGMENT, ORDER, device_generator

# CIFAR-10 per-channel statistics of the training set (SPEC 2 protocol).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
PAD = 4  # pixels of zero padding before the random 32x32 crop (SPEC 2)


def epoch_permutation(n: int, seed: int, epoch: int,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """The shuffled order of `n` items in `epoch`: (n,) int64 on `device`."""
    device = torch.device(device)
    return torch.randperm(n, generator=device_generator(seed, epoch, ORDER, device), device=device)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 32x32 crop of the zero-padded (40x40) images, then a coin-flip mirror:
    x (B, C, H, W) uint8 -> (B, C, H, W) uint8, drawn from `generator` (on x's device)."""
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD))        # (B, C, H+8, W+8)
    width = w + 2 * PAD
    dy, dx = torch.randint(0, 2 * PAD + 1, (2, b, 1), generator=generator, device=x.device)
    flip = torch.rand((b, 1), generator=generator, device=x.device) < 0.5
    rows = dy + torch.arange(h, device=x.device)                       # (B, H)
    cols = dx + torch.arange(w, device=x.device)                       # (B, W)
    cols = torch.where(flip, cols.flip(1), cols)   # mirroring = reading columns backwards
    # One flat index per output pixel, shared by the channels: a single torch.gather, 6x
    # faster on CPU than advanced indexing with four broadcast index tensors.
    index = (rows[:, :, None] * width + cols[:, None, :]).view(b, 1, h * w)  # (B, 1, H*W)
    flat = padded.view(b, c, -1).gather(2, index.expand(b, c, h * w))       # (B, C, H*W)
    return flat.view(b, c, h, w)


@functools.lru_cache(maxsize=8)
def _scale_shift(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # (x/255 - mean)/std == x * scale - shift: one multiply and one subtract per pixel, with
    # the constants built once per device instead of copied to it every batch.
    std, mean = torch.tensor(CIFAR_STD), torch.tensor(CIFAR_MEAN)
    scale, shift = 1 / (255 * std), mean / std
    return scale.view(1, 3, 1, 1).to(device), shift.view(1, 3, 1, 1).to(device)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 (B, 3, H, W): (x/255 - CIFAR_MEAN) / CIFAR_STD."""
    scale, shift = _scale_shift(x.device)
    return x.float().mul_(scale).sub_(shift)


class DeviceLoader:
    """Batches of one split, held on `device` as uint8 NCHW (ARCHITECTURE.md, "Data")."""

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, *,
                 batch_size: int, shuffle: bool = True, augment: bool | AugmentSpec = False,
                 drop_last: bool = False, seed: int = 0,
                 device: torch.device | str = "cpu", sampler: str = "instance",
                 mix: MixSpec | None = None) -> None:
        self.device = torch.device(device)
        images = torch.as_tensor(images)                      # (N, 32, 32, 3) uint8
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} "
                             f"{tuple(images.shape)}")
        self.images = images.to(self.device).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
        self.labels = torch.as_tensor(labels, dtype=torch.int64).to(self.device)  # (N,)
        if len(self.labels) != len(self.images) or batch_size < 1:
            raise ValueError(f"{len(self.images)} images, {len(self.labels)} labels, "
                             f"batch_size {batch_size}")
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.drop_last, self.seed = drop_last, seed
        self.sampler = sampler  # `data.sampler`: instance (shuffle), class-balanced or sqrt
        self.mix = mix  # mixup / CutMix after normalising (`data.mix`); None: labels as they are
        self.rows: torch.Tensor | None = None  # (n,) rows of `images` this split uses; None: all

    def subset(self, rows: np.ndarray | torch.Tensor, *, batch_size: int, shuffle: bool,
               augment: bool | AugmentSpec, drop_last: bool, seed: int,
               sampler: str = "instance", mix: MixSpec | None = None) -> DeviceLoader:
        """A loader over `rows` of this one's images, sharing its device memory (no copy). Its
        batches equal those of `DeviceLoader(images[rows], labels[rows], ...)` for the same
        seed, so runs sharing one copy on the device (fused training, issue 8) see what they
        would see alone."""
        rows = torch.as_tensor(rows, dtype=torch.int64).to(self.device)
        if batch_size < 1 or (len(rows) and not 0 <= int(rows.min()) <= int(rows.max())
                              < len(self.labels)):
            raise ValueError(f"rows must index the {len(self.labels)} images; "
                             f"batch_size {batch_size}")
        view = copy.copy(self)
        view.rows = rows if self.rows is None else self.rows[rows]
        view.batch_size, view.shuffle, view.augment = batch_size, shuffle, augment
        view.drop_last, view.seed, view.sampler, view.mix = drop_last, seed, sampler, mix
        return view

    @property
    def num_samples(self) -> int:
        """Images in the split (those dropped by `drop_last` included)."""
        return len(self.labels) if self.rows is None else len(self.rows)

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of `epoch`: (x (B, 3, 32, 32) float32, y (B,) int64) on the device;
        with mixing, y is (B, 3) float64 mixed targets (`cifarctl.data.mix`)."""
        batches = self._cropped(epoch)                             # (x uint8, rows) each
        policy = epoch_policy(self.augment, self.seed, epoch, self.device)
        if policy is not None:
            batches = policy_chunks(policy, batches, self.batch_size, self.device)
        mix = BatchMixer(self.mix, seed=self.seed, epoch=epoch, device=self.device) \
            if self.mix is not None else None
        for x, idx in batches:
            x, y = normalize(x), self.labels[idx]
            yield mix(x, y) if mix is not None else (x, y)

    def _cropped(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each batch's uint8 images (B, 3, 32, 32), cropped and flipped when augmenting,
        and their rows (B,)."""
        n = self.num_samples
        if self.sampler != "instance":  # class-aware sampling (issue 18): data.samplers
            from cifarctl.data.samplers import sampled_order

            labels = self.labels if self.rows is None else self.labels[self.rows]  # (n,)
            order = sampled_order(labels, self.sampler,
                                  device_generator(self.seed, epoch, ORDER, self.device))
        elif self.shuffle:
            order = epoch_permutation(n, self.seed, epoch, self.device)
        else:
            order = torch.arange(n, device=self.device)
        augment_rng = device_generator(self.seed, epoch, AUGMENT, self.device)
        crop_flip = self.augment is True or getattr(self.augment, "crop_flip", False)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            if self.rows is not None:
                idx = self.rows[idx]
            x = self.images[idx]                                   # (B, 3, 32, 32) uint8
            yield (random_crop_flip(x, augment_rng) if crop_flip else x), idx
