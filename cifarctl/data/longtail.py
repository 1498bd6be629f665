"""Long-tailed training subsets and the validation split, as pure seeded functions (SPEC 1.3).

    long_tail_counts("exp", 100)   # [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    splits = make_splits(data.train_labels, profile="exp", ratio=100, seed=0)
    splits.train_idx, splits.val_idx, splits.train_counts

Order of operations (issue 2, "Long-tailed subsets and splits"): each class is shuffled
with its own generator seeded by (seed, class); its first `val_per_class` images become
validation, and the long-tail profile keeps a prefix of the rest. So the validation set
never depends on the ratio, never overlaps training, and the subsets of one seed are
nested (ratio 200 keeps a subset of what ratio 100 keeps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cifarctl.errors import UsageError

PROFILES = ("exp", "step")


def long_tail_counts(profile: str, ratio: float, n_max: int = 5000, classes: int = 10) -> list[int]:
    """Images kept per class, head first; `ratio` = n_max / n_min (1 = balanced).

    exp:  n_i = int(n_max * (1/ratio)^(i/(classes-1)))  (Cui et al. 2019)
    step: n_max for the first half of the classes, int(n_max/ratio) for the rest (Cao et al.)
    """
    if profile not in PROFILES:
        raise UsageError(f"unknown long-tail profile {profile!r}; use one of {list(PROFILES)}")
    if not ratio >= 1:  # also rejects NaN
        raise UsageError(f"imbalance ratio must be >= 1 (1 = balanced), got {ratio}")
    if n_max < 1 or classes < 1:
        raise UsageError(f"need n_max >= 1 and classes >= 1, got {n_max} and {classes}")
    if profile == "step":
        head = classes // 2
        return [n_max] * head + [int(n_max / ratio)] * (classes - head)
    if classes == 1:
        return [n_max]
    # Written exactly as the reference code (Cao et al., IMBALANCECIFAR10.get_img_num_per_cls)
    # so float rounding lands on the published counts.
    factor = 1.0 / ratio
    return [int(n_max * factor ** (i / (classes - 1.0))) for i in range(classes)]


def default_val_per_class(class_size: int, ratio: float) -> int:
    """Validation images per class when none is given (issue 2): 500 when balanced (a tenth of
    a class under 5,000 images: synthetic sets); 0 when long-tailed, so the published training
    counts hold exactly."""
    if ratio > 1:
        return 0
    return 500 if class_size >= 5000 else class_size // 10


@dataclass(frozen=True)
class Splits:
    """Disjoint index arrays into the training split, plus the counts that resulted."""

    train_idx: np.ndarray     # (n_train,) int64, sorted
    val_idx: np.ndarray       # (n_val,) int64, sorted
    train_counts: list[int]   # images per class in train_idx, label order
    val_counts: list[int]     # images per class in val_idx


def make_splits(labels: np.ndarray, *, profile: str = "exp", ratio: float = 1.0,
                val_per_class: int | None = None, seed: int = 0, n_max: int | None = None,
                num_classes: int | None = None) -> Splits:
    """Carve a stratified validation set, then apply the long-tail profile to the rest;
    `n_max` defaults to the fewest images a class has left after validation."""
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    sizes = [len(idx) for idx in by_class]
    if min(sizes) == 0:
        raise UsageError(f"class {sizes.index(0)} has no training images; cannot split")
    long_tail_counts(profile, ratio)  # validate profile and ratio before anything else
    val = [default_val_per_class(n, ratio) if val_per_class is None else val_per_class
           for n in sizes]
    if min(val) < 0 or any(v >= n for v, n in zip(val, sizes)):
        raise UsageError(f"val_per_class must be >= 0 and leave training images in every "
                         f"class (smallest class has {min(sizes)}), got {val_per_class}")
    remaining = [n - v for n, v in zip(sizes, val)]
    n_max = min(remaining) if n_max is None else n_max
    if n_max > min(remaining):
        raise UsageError(f"n_max {n_max} exceeds the {min(remaining)} images the smallest "
                         "class has left after validation")
    counts = long_tail_counts(profile, ratio, n_max, num_classes)
    train, held_out = [], []
    for c, idx in enumerate(by_class):
        # Generator per (seed, class): independent of global RNG and of the other classes.
        order = np.random.default_rng([seed, c]).permutation(idx)
        held_out.append(order[:val[c]])
        train.append(order[val[c]:val[c] + counts[c]])
    return Splits(np.sort(np.concatenate(train)).astype(np.int64),
                  np.sort(np.concatenate(held_out)).astype(np.int64), counts, val)
