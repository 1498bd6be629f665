"""The data a run trains and evaluates on: its splits as views of one device copy.

    shared = share_data("synthetic", device)       # the dataset on the device, once
    data = prepare_data(cfg, device, shared)       # this run's train/val/test loaders, probe
    run_splits(cfg, shared.dataset)                # the cheap check `sweep` runs first

The runs of a fused group share one `SharedData`; each run's loaders are index views of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from cifarctl.config import RunConfig
from cifarctl.errors import UsageError

EVAL_BATCH = 1024  # evaluation has no gradients: bigger batches, fewer launches
PROBE_SIZE = 256  # images in the fixed dead-ReLU probe batch (SPEC 1.1)


@dataclass
class RunData:
    """One run's view of the data: its loaders, class counts and the dead-ReLU probe."""

    name: str
    classes: tuple[str, ...]
    fingerprint: str
    train_counts: list[int]
    train: Any  # DeviceLoader
    val: Any | None
    test: Any
    probe: torch.Tensor  # (PROBE_SIZE, 3, 32, 32) normalised, un-augmented training images
    source: dict = field(default_factory=dict)  # CifarData.source: how the data was made


@dataclass
class SharedData:
    """A dataset's images on the device once; each run's splits are index views of it, so
    the runs of a fused group (issue 8) share one copy."""

    dataset: Any  # CifarData
    every_train: Any  # DeviceLoader over every training image, validation rows included
    test: Any  # DeviceLoader over the test set


def share_data(spec: str, device: torch.device) -> SharedData:
    from cifarctl.data import load_dataset
    from cifarctl.data.loader import DeviceLoader

    data = load_dataset(spec)

    def plain(images, labels) -> Any:
        return DeviceLoader(images, labels, batch_size=EVAL_BATCH, shuffle=False,
                            augment=False, drop_last=False, seed=0, device=device)

    return SharedData(data, plain(data.train_images, data.train_labels),
                      plain(data.test_images, data.test_labels))


def run_splits(cfg: RunConfig, data: Any, *, check: bool = True) -> Any:
    """`cfg.data`'s train/validation split of `data` (a CifarData); with `check`, UsageError
    for a class left without images or fewer images than one batch. Cheap: `sweep` checks
    every config with it before an MLflow run exists; `eval` rebuilds a run's split with it."""
    from cifarctl.data.longtail import make_splits

    splits = make_splits(data.train_labels, profile=cfg.data.imbalance_type,
                         ratio=cfg.data.imbalance, val_per_class=cfg.data.val_per_class,
                         seed=cfg.run.seed, num_classes=len(data.classes))
    if not check:
        return splits
    counts = list(splits.train_counts)
    if min(counts) == 0:
        raise UsageError(f"data.imbalance={cfg.data.imbalance:g} leaves class "
                         f"{counts.index(0)} without training images (counts {counts}); "
                         f"lower data.imbalance")
    if sum(counts) < cfg.optim.batch_size:
        raise UsageError(f"optim.batch_size={cfg.optim.batch_size} is larger than the "
                         f"{sum(counts)} training images; lower it")
    return splits


def prepare_data(cfg: RunConfig, device: torch.device, shared: SharedData | None = None
                 ) -> RunData:
    """The run's splits of `cfg.data` (from `shared`, when given, without another copy)."""
    from cifarctl.data.augment import AugmentSpec
    from cifarctl.data.loader import normalize
    from cifarctl.data.mix import MixSpec

    shared = shared or share_data(cfg.data.dataset, device)
    data, every = shared.dataset, shared.every_train
    splits = run_splits(cfg, data)
    # drop_last keeps every step's shape static (torch.compile, cudnn.benchmark).
    train = every.subset(splits.train_idx, batch_size=cfg.optim.batch_size, shuffle=True,
                         augment=AugmentSpec.of(cfg.data), drop_last=True, seed=cfg.run.seed,
                         sampler=cfg.data.sampler, mix=MixSpec.of(cfg.data))
    val = (every.subset(splits.val_idx, batch_size=EVAL_BATCH, shuffle=False, augment=False,
                        drop_last=False, seed=0) if len(splits.val_idx) else None)
    probe_idx = torch.randperm(len(splits.train_idx),
                               generator=torch.Generator().manual_seed(cfg.run.seed))[:PROBE_SIZE]
    probe = normalize(every.images[train.rows[probe_idx.to(device)]])
    return RunData(data.name, tuple(data.classes), data.fingerprint, list(splits.train_counts),
                   train, val, shared.test, probe, data.source)
