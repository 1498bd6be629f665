"""Scores derived from per-class accuracies and calibration bins, as pure functions.

    shot_groups([5000, 2997, ..., 83, 50])           # {"many": [0..7], "medium": [8, 9], "few": []}
    group_accuracies(per_class_acc, counts)          # {"many": 0.71, "medium": 0.45, "few": None}
    expected_calibration_error(bins)                 # bins: (count, summed confidence, correct)

Torch- and pandas-free: `eval` feeds them device results brought to the host, `report`
feeds them the logged metrics of each run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Liu et al. 2019 ("Large-Scale Long-Tailed Recognition in an Open World", CVPR), sec. 5:
# many-shot classes have more than 100 training images, few-shot fewer than 20, and
# medium-shot the rest (20 to 100). The counts are those of the run's own training set.
MANY_ABOVE = 100
FEW_BELOW = 20
SHOT_GROUPS = ("many", "medium", "few")
SHOT_RULES = {"many": "> 100 training images", "medium": "20-100 training images",
              "few": "< 20 training images"}


def shot_groups(counts: Sequence[int]) -> dict[str, list[int]]:
    """Class indices of each shot group, in `SHOT_GROUPS` order; a group may be empty."""
    groups: dict[str, list[int]] = {name: [] for name in SHOT_GROUPS}
    for i, count in enumerate(map(int, counts)):
        groups["many" if count > MANY_ABOVE else "few" if count < FEW_BELOW else "medium"].append(i)
    return groups


def group_accuracies(per_class: Sequence[float], counts: Sequence[int]
                     ) -> dict[str, float | None]:
    """Mean per-class accuracy over each shot group's classes; None for an empty group.

    The mean of class accuracies (not of images), as Liu et al. report it: on a balanced test
    set the two agree.
    """
    if len(per_class) != len(counts):
        raise ValueError(f"{len(per_class)} accuracies for {len(counts)} class counts")
    out: dict[str, float | None] = {}
    for name, classes in shot_groups(counts).items():
        values = [float(per_class[i]) for i in classes if not math.isnan(float(per_class[i]))]
        out[name] = math.fsum(values) / len(values) if values else None
    return out


def expected_calibration_error(bins: Sequence[Sequence[float]]) -> float:
    """ECE = sum_b (n_b / N) |acc_b - conf_b| (Guo et al. 2017, "On Calibration of Modern
    Neural Networks", eq. 3) from per-bin rows (count, summed confidence, correct).

    With acc_b = correct_b / n_b and conf_b = confidence_b / n_b this is
    sum_b |correct_b - confidence_b| / N. NaN when there are no examples.
    """
    total = math.fsum(float(row[0]) for row in bins)
    if total == 0:
        return math.nan
    return math.fsum(abs(float(correct) - float(confidence))
                     for _, confidence, correct in bins) / total
