"""Post-hoc logit adjustment (issue 18) on hand-made logits, against the formula written out."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cifarctl.evaluation.posthoc import (
    TEST_ACC,
    adjusted_counts,
    adjusted_metrics,
    adjusted_predictions,
    parse_taus,
)

COUNTS = [60, 30, 10]  # the training prior: pi = 0.6, 0.3, 0.1
LOGITS = torch.tensor([[2.0, 1.0, 0.0],    # class 0 by 1.0
                       [2.0, 0.5, 0.0],
                       [1.0, 1.5, 0.0],
                       [0.5, 0.0, 0.4],
                       [3.0, 0.0, 0.0],
                       [0.0, 0.1, -0.2]])
LABELS = torch.tensor([1, 2, 1, 2, 0, 1])


def expected_predictions(tau: float) -> list[int]:
    """argmax_c z_c - tau log(n_c / sum n), by hand in Python floats."""
    total = sum(COUNTS)
    out = []
    for row in LOGITS.tolist():
        scores = [z - tau * math.log(n / total) for z, n in zip(row, COUNTS)]
        out.append(max(range(len(scores)), key=scores.__getitem__))
    return out


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_adjusted_predictions_and_accuracies_match_the_formula(tau):
    log_prior = torch.log(torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS))
    expected = expected_predictions(tau)
    assert adjusted_predictions(LOGITS, log_prior, tau).tolist() == expected
    batches = [(LOGITS[:4], LABELS[:4]), (LOGITS[4:], LABELS[4:])]  # the model: identity
    (counts,) = adjusted_counts(nn.Identity(), batches, log_prior, [tau], num_classes=3)
    metrics = adjusted_metrics([counts], ["eval_la_test"])
    correct = [p == y for p, y in zip(expected, LABELS.tolist())]
    assert metrics["eval_la_test_acc"].item() == pytest.approx(sum(correct) / len(correct))
    for c in range(3):
        rows = [i for i, y in enumerate(LABELS.tolist()) if y == c]
        assert metrics[f"eval_la_test_acc_class_{c}"].item() == pytest.approx(
            sum(correct[i] for i in rows) / len(rows))
    assert "eval_la_test_loss" not in metrics


def test_adjustment_moves_predictions_towards_the_rare_classes():
    assert expected_predictions(0.0) == [0, 0, 1, 0, 0, 1]
    assert expected_predictions(1.0) == [0, 0, 1, 2, 0, 2]  # the tail class gains


def test_parse_taus_reads_repeats_and_commas_once_each():
    assert parse_taus(["1", "0.5, 2", "1"]) == [1.0, 0.5, 2.0]
    assert parse_taus([]) == []


def test_the_report_finds_post_hoc_test_accuracies_by_name():
    assert TEST_ACC.fullmatch("eval_la1_test_acc").group(1) == "1"
    assert TEST_ACC.fullmatch("eval_la0.5_test_acc").group(1) == "0.5"
    for other in ("eval_last_test_acc", "eval_la1_test_acc_class_3", "eval_la1_val_acc",
                  "eval_last_la1_test_acc"):
        assert TEST_ACC.fullmatch(other) is None
