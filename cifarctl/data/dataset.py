"""The one validated in-memory form every data source ends in (issue 2, "Data sources").

    arrays = DatasetArrays(classes, train_images, train_labels, test_images, test_labels)
    arrays.check(source="cifar10-jpeg.tar.gz")      # UsageError on wrong shapes or labels
    data = CifarData.from_arrays(arrays, name="cifar10", fingerprint=fingerprint(arrays),
                                 path=cache_file)    # what the cache returns

Sources (CIFAR batches, image folders, the synthetic generator) produce `DatasetArrays`;
the cache turns them into a `CifarData` (ARCHITECTURE.md, "Data").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cifarctl.errors import UsageError

# CIFAR-10's label order (batches.meta of the official release; SPEC 3).
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
IMAGE_SHAPE = (32, 32, 3)  # (H, W, C), uint8


class DatasetArrays(NamedTuple):
    """Images and labels of both splits, before caching."""

    classes: tuple[str, ...]
    train_images: np.ndarray  # (N, 32, 32, 3) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray   # (M, 32, 32, 3) uint8
    test_labels: np.ndarray   # (M,) int64

    def check(self, source: str) -> None:
        """Raise `UsageError` naming `source` unless shapes, dtypes and labels are valid."""
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise UsageError(f"{source}: class names must be unique and non-empty, "
                             f"got {list(self.classes)}")
        for split, images, labels in (("train", self.train_images, self.train_labels),
                                      ("test", self.test_images, self.test_labels)):
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
                raise UsageError(f"{source}: {split} images must be uint8 (N, 32, 32, 3), "
                                 f"got {images.dtype} {images.shape}")
            if labels.dtype != np.int64 or labels.shape != images.shape[:1]:
                raise UsageError(f"{source}: {split} labels must be int64 ({len(images)},), "
                                 f"got {labels.dtype} {labels.shape}")
            if len(images) == 0:
                raise UsageError(f"{source}: the {split} split has no images")
            if labels.min() < 0 or labels.max() >= len(self.classes):
                raise UsageError(f"{source}: {split} labels must lie in 0..{len(self.classes) - 1}"
                                 f", got {labels.min()}..{labels.max()}")


def fingerprint(arrays: DatasetArrays) -> str:
    """sha256 of the pixels and labels, train then test (issue 2): names a dataset's content."""
    digest = hashlib.sha256()
    for part in arrays[1:]:
        digest.update(np.ascontiguousarray(part).data)
    return digest.hexdigest()


@dataclass(frozen=True)
class CifarData:
    """A cached, validated dataset: what `load_dataset` returns (ARCHITECTURE.md, "Data")."""

    name: str
    classes: tuple[str, ...]
    train_images: np.ndarray  # (N, 32, 32, 3) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray   # (M, 32, 32, 3) uint8
    test_labels: np.ndarray   # (M,) int64
    fingerprint: str          # sha256 hex of pixels + labels
    path: Path                # the cache file it was loaded from
    # how it was made ({"synth": spec}, {"path": ...}, {"download": url}): a run logs it, so
    # a colleague can make the same data again from the run alone
    source: dict = field(default_factory=dict)

    @classmethod
    def from_arrays(cls, arrays: DatasetArrays, *, name: str, fingerprint: str,
                    path: Path, source: dict | None = None) -> CifarData:
        return cls(name, *arrays, fingerprint=fingerprint, path=path, source=source or {})

    def per_class(self, split: str) -> list[int]:
        """Image count of each class in `split` ("train" or "test"), in label order."""
        labels = getattr(self, f"{split}_labels")
        return np.bincount(labels, minlength=len(self.classes)).tolist()

    def summary(self) -> dict:
        """The `cifarctl data info --json` object (issue 2)."""
        return {
            "classes": list(self.classes),
            "train": {"count": len(self.train_labels), "per_class": self.per_class("train")},
            "test": {"count": len(self.test_labels), "per_class": self.per_class("test")},
            "fingerprint": self.fingerprint,
            "path": str(self.path),
        }
