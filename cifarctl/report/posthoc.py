"""The report's post-hoc columns: `eval --logit-adjust TAU` accuracies beside the run's own.

    metrics = posthoc_metrics(groups)     # ["eval_la1_test_acc", "eval_la0.5_test_acc"], by tau
    column_label("eval_la1_test_acc")     # "post-hoc LA τ=1"

A run's post-hoc accuracy (Menon et al. 2021) is its model with the training prior
subtracted from its logits: its own column, never its test accuracy. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from cifarctl.evaluation.posthoc import TEST_ACC


def posthoc_metrics(groups: Sequence[Any]) -> list[str]:
    """The `eval_la<tau>_test_acc` metrics some run of `groups` has, by increasing tau."""
    found: dict[str, float] = {}
    for group in groups:
        for column in group.rows.columns:
            match = TEST_ACC.fullmatch(column.removeprefix("metrics."))
            if match and column.startswith("metrics.") and not all(
                    math.isnan(v) for v in group.metric(match.group(0))):
                found[match.group(0)] = float(match.group(1))
    return sorted(found, key=found.__getitem__)


def column_label(metric: str) -> str | None:
    """`post-hoc LA τ=1` for `eval_la1_test_acc`; None for another metric."""
    match = TEST_ACC.fullmatch(metric)
    return f"post-hoc LA τ={float(match.group(1)):g}" if match else None
