"""Long-tail counts (SPEC 1.3) and validation/training splits, against independent references."""

from __future__ import annotations

import numpy as np
import pytest

from cifarctl.data.longtail import long_tail_counts, make_splits
from cifarctl.errors import UsageError

# SPEC 1.3, and the per-class counts of Cao et al.'s CIFAR-10-LT at ratios 50 and 200.
PUBLISHED_EXP = {
    10: [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500],
    50: [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100],
    100: [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50],
    200: [5000, 2775, 1540, 854, 474, 263, 146, 81, 45, 25],
}


def exact_exp_counts(ratio: int, n_max: int = 5000, classes: int = 10) -> list[int]:
    """floor(n_max * ratio^(-i/(C-1))) in exact integer arithmetic.

    k <= n_max * ratio^(-i/(C-1))  <=>  k^(C-1) * ratio^i <= n_max^(C-1), for integer ratios.
    """
    e = classes - 1
    counts = []
    for i in range(classes):
        k = n_max
        while k ** e * ratio ** i > n_max ** e:
            k -= 1
        counts.append(k)
    return counts


@pytest.mark.parametrize("ratio", sorted(PUBLISHED_EXP))
def test_exp_counts(ratio):
    assert long_tail_counts("exp", ratio) == PUBLISHED_EXP[ratio] == exact_exp_counts(ratio)
    assert sum(long_tail_counts("exp", 100)) == 12406  # SPEC 1.3


@pytest.mark.parametrize("ratio", [2, 5, 20, 25, 40, 64, 150, 500, 1000])
def test_exp_counts_match_exact_arithmetic(ratio):
    assert long_tail_counts("exp", ratio) == exact_exp_counts(ratio)


@pytest.mark.parametrize("ratio", [10, 50, 100, 200])
def test_step_counts(ratio):
    assert long_tail_counts("step", ratio) == [5000] * 5 + [5000 // ratio] * 5


def test_balanced_and_custom_sizes():
    assert long_tail_counts("exp", 1) == [5000] * 10
    assert long_tail_counts("step", 1, n_max=900) == [900] * 10
    assert long_tail_counts("exp", 10, n_max=1000) == [1000, 774, 599, 464, 359, 278, 215,
                                                       166, 129, 100]
    assert long_tail_counts("step", 4, n_max=100, classes=5) == [100, 100, 25, 25, 25]


@pytest.mark.parametrize("profile, ratio, fragment", [
    ("exp", 0.5, "must be >= 1"),
    ("exp", float("nan"), "must be >= 1"),
    ("zipf", 10, "unknown long-tail profile 'zipf'"),
])
def test_bad_profile_or_ratio(profile, ratio, fragment):
    with pytest.raises(UsageError, match=fragment):
        long_tail_counts(profile, ratio)


def _labels(per_class: int, classes: int = 10) -> np.ndarray:
    # Interleaved like real data, not grouped.
    return np.tile(np.arange(classes), per_class)


def test_long_tailed_split_counts_and_no_overlap():
    labels = _labels(5000)
    splits = make_splits(labels, profile="exp", ratio=100, val_per_class=500, seed=3)
    assert splits.val_counts == [500] * 10
    assert splits.train_counts == long_tail_counts("exp", 100, n_max=4500)  # logged counts
    assert np.bincount(labels[splits.train_idx]).tolist() == splits.train_counts
    assert np.bincount(labels[splits.val_idx]).tolist() == [500] * 10
    assert np.intersect1d(splits.train_idx, splits.val_idx).size == 0
    assert splits.train_idx.dtype == np.int64 and splits.val_idx.dtype == np.int64


def test_default_validation_rule():
    balanced = make_splits(_labels(5000))
    assert balanced.val_counts == [500] * 10 and balanced.train_counts == [4500] * 10
    small = make_splits(_labels(1000))  # synthetic-sized: a tenth of each class
    assert small.val_counts == [100] * 10 and small.train_counts == [900] * 10
    long_tailed = make_splits(_labels(5000), ratio=100)  # 0, so the published counts hold
    assert long_tailed.val_idx.size == 0
    assert long_tailed.train_counts == PUBLISHED_EXP[100]


def test_split_is_seeded_and_ignores_global_rng():
    labels = _labels(300)
    np.random.seed(1)
    a = make_splits(labels, ratio=10, val_per_class=20, seed=7)
    np.random.seed(2)
    np.random.random(100)
    b = make_splits(labels, ratio=10, val_per_class=20, seed=7)
    c = make_splits(labels, ratio=10, val_per_class=20, seed=8)
    assert (a.train_idx == b.train_idx).all() and (a.val_idx == b.val_idx).all()
    assert not np.array_equal(a.val_idx, c.val_idx)


def test_validation_does_not_depend_on_ratio_and_subsets_nest():
    labels = _labels(1000)
    by_ratio = {r: make_splits(labels, profile="exp", ratio=r, val_per_class=50, seed=0)
                for r in (1, 10, 100)}
    assert all((s.val_idx == by_ratio[1].val_idx).all() for s in by_ratio.values())
    assert np.isin(by_ratio[100].train_idx, by_ratio[10].train_idx).all()
    assert np.isin(by_ratio[10].train_idx, by_ratio[1].train_idx).all()


@pytest.mark.parametrize("kwargs, fragment", [
    ({"val_per_class": 300}, "leave training images"),
    ({"val_per_class": -1}, "must be >= 0"),
    ({"n_max": 400, "val_per_class": 0}, "n_max 400 exceeds"),
    ({"ratio": 0.9}, "must be >= 1"),
    ({"profile": "linear"}, "unknown long-tail profile"),
    ({"seed": -1}, "seed must be >= 0"),
])
def test_bad_split_arguments(kwargs, fragment):
    with pytest.raises(UsageError, match=fragment):
        make_splits(_labels(300), **kwargs)
