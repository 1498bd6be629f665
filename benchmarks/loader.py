"""Images per second: cifarctl's DeviceLoader vs the usual torchvision Dataset + DataLoader.

    .venv/bin/python benchmarks/loader.py                       # synthetic set, CPU
    .venv/bin/python benchmarks/loader.py --dataset cifar10 --device cuda --epochs 5
    .venv/bin/python benchmarks/loader.py --policies randaugment --epochs 7 --images 10000

Both produce every training image once an epoch, shuffled, cropped, mirrored, through the
policy (`--policies`, `--cutout`) and normalised (SPEC 2), as float32 (B, 3, 32, 32) batches on
`--device`: the DeviceLoader vs `PilCifar` below through DataLoader(num_workers=2), as the
reference repositories do. Epochs alternate, after one untimed warm-up each (method and
results: BENCHMARKS.md, "Data pipeline").

Measured on this project's 2-core CPU machine (shared, load average about 2), synthetic set,
batch 128, median of 5 epochs: DeviceLoader 78,872 images/s, torchvision 3,137 images/s,
25x. On the 50,000 real CIFAR-10 JPEG images (3 epochs, load about 4): 82,459 vs 2,168, 38x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from emit import emit


class Cutout:
    """DDC's (and DeVries & Taylor's) Cutout on a (3, H, W) tensor: a square zeroed around a
    uniform centre, clipped at the border."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[1:]
        y, x = np.random.randint(h), np.random.randint(w)
        half = self.length // 2
        img = img.clone()
        img[:, max(0, y - half):min(h, y + half), max(0, x - half):min(w, x + half)] = 0
        return img


class PilCifar(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: uint8 array -> PIL -> transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, policy: str = "crop-flip",
                 cutout: int = 0) -> None:
        from torchvision import transforms

        from cifarctl.data.loader import CIFAR_MEAN, CIFAR_STD

        self.images, self.labels = images, labels
        # the reference repositories' transform for `policy`, on PIL images after crop + flip
        policies = {"crop-flip": [], "randaugment": [transforms.RandAugment()],
                    "autoaugment": [transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10)]}
        self.transform = transforms.Compose([
            transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
            *policies[policy], transforms.ToTensor(), *([Cutout(cutout)] if cutout else []),
            transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def side_by_side(ours, theirs, device: torch.device, epochs: int) -> tuple[list, list]:
    """Seconds per epoch of each, alternating, after one untimed warm-up epoch each."""
    times: tuple[list, list] = ([], [])
    for epoch in range(epochs + 1):
        for out, batches_of_epoch in zip(times, (ours, theirs)):
            start = time.perf_counter()
            for x, _ in batches_of_epoch(epoch):
                x.sum()  # make sure the batch is materialised (and transferred) before moving on
            seconds = time.perf_counter() - start
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if epoch:
                out.append(seconds)
    return times


def compare(policy: str, images: np.ndarray, labels: np.ndarray, args: argparse.Namespace,
            device: torch.device) -> dict:
    """One policy, ours and torchvision's, side by side: images/s (medians) and the ratio."""
    from cifarctl.data.augment import AugmentSpec
    from cifarctl.data.loader import DeviceLoader

    augment = (True if policy == "crop-flip" and not args.cutout
               else AugmentSpec(policy=None if policy == "crop-flip" else policy,
                                cutout=args.cutout))
    ours = DeviceLoader(images, labels, batch_size=args.batch_size, shuffle=True,
                        augment=augment, seed=0, device=device)
    baseline = torch.utils.data.DataLoader(
        PilCifar(images, labels, policy, args.cutout), batch_size=args.batch_size,
        shuffle=True, num_workers=args.workers, persistent_workers=args.workers > 0,
        pin_memory=device.type == "cuda")

    def baseline_epoch(epoch: int):
        for x, y in baseline:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    ours_times, theirs_times = side_by_side(ours.epoch, baseline_epoch, device, args.epochs)
    n = len(labels)
    ours_rate, theirs_rate = (n / statistics.median(t) for t in (ours_times, theirs_times))
    return {"policy": policy + (f"+cutout{args.cutout}" if args.cutout else ""),
            "device_loader_images_per_s": round(ours_rate),
            "torchvision_images_per_s": round(theirs_rate),
            "ratio": round(ours_rate / theirs_rate, 1),
            "device_loader_epoch_s": [round(t, 3) for t in ours_times],
            "torchvision_epoch_s": [round(t, 3) for t in theirs_times],
            "load_average_1min_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic", help="synthetic, cifar10 or a path")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per loader")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="torchvision DataLoader workers")
    parser.add_argument("--images", type=int, default=None,
                        help="use only the first N training images (quick checks)")
    parser.add_argument("--policies", default="crop-flip,randaugment,autoaugment",
                        help="comma-separated: crop-flip, randaugment, autoaugment")
    parser.add_argument("--cutout", type=int, default=0, help="Cutout pixels after the policy")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (ours)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()

    from cifarctl.data import load_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset)
    device = torch.device(args.device)
    images, labels = data.train_images[:args.images], data.train_labels[:args.images]
    rows = [compare(p.strip(), images, labels, args, device)
            for p in args.policies.split(",") if p.strip()]
    result = {"dataset": data.name, "images": len(labels), "device": str(device),
              "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                              else f"cpu x{torch.get_num_threads()} threads"),
              "batch_size": args.batch_size, "epochs": args.epochs, "workers": args.workers,
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "policies": rows}
    first = rows[0]  # the keys the crop-flip-only benchmark has always had
    result.update({k: first[k] for k in ("device_loader_images_per_s",
                                         "torchvision_images_per_s", "ratio")})
    _print_table(result)
    emit(result, args.json)


def _print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['images']:,} {result['dataset']} training images per epoch on "
                        f"{result['device_name']}, batch {result['batch_size']}, median of "
                        f"{result['epochs']} epochs, alternating")
    for column in ("policy", "cifarctl DeviceLoader, images/s",
                   f"torchvision DataLoader({result['workers']} workers), images/s", "ratio"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for r in result["policies"]:
        table.add_row(r["policy"], f"{r['device_loader_images_per_s']:,}",
                      f"{r['torchvision_images_per_s']:,}", f"{r['ratio']}x")
    Console().print(table)


if __name__ == "__main__":
    main()
