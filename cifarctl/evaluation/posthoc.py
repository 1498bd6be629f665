"""Post-hoc logit adjustment: a trained model's predictions corrected for its training prior.

    taus = parse_taus(["1", "0.5,2"])                   # --logit-adjust values: [1.0, 0.5, 2.0]
    pred = adjusted_predictions(logits, log_pi, 1.0)    # argmax_c z_c - tau log pi_c
    counts = adjusted_counts(model, batches, log_pi, taus, num_classes=10)  # one EvalCounts a tau

Menon et al. 2021, "Long-tail learning via logit adjustment", Sec. 4 (eq. 9): a model trained
with plain cross-entropy estimates p(y | x), whose argmax favours the frequent classes;
subtracting tau log pi_y from its logits estimates the balanced error's Bayes classifier
(tau = 1). pi is the run's own training prior: its `class_counts` as its `data.sampler` drew
them (`data.samplers.class_probabilities`; uniform for a class-balanced run, which no tau
changes). Its numbers are logged under their own names (`eval_la<tau>_test_acc`, ...) so
they never pass for the run's own.
Torch is imported by the functions that compute: the CLI and `report` read the names here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from cifarctl.errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cifarctl.engine import EvalCounts

# `eval_la1_test_acc`: a post-hoc accuracy on the run's own test set (what `report` shows)
TEST_ACC = re.compile(r"eval_la(\d+(?:\.\d+)?(?:e[-+]?\d+)?)_test_acc")


def parse_taus(values: Sequence[str]) -> list[float]:
    """`--logit-adjust 1 --logit-adjust 0.5,2` -> [1.0, 0.5, 2.0]; each tau >= 0, finite."""
    taus: list[float] = []
    for text in (part.strip() for value in values for part in str(value).split(",")):
        try:
            tau = float(text)
        except ValueError:
            raise UsageError(f"--logit-adjust takes numbers tau >= 0 (e.g. 1 or 0.5,1,2), got "
                             f"{text!r}") from None
        if not 0 <= tau < float("inf"):
            raise UsageError(f"--logit-adjust takes numbers tau >= 0, got {text}")
        if tau not in taus:
            taus.append(tau)
    return taus


def tau_name(tau: float) -> str:
    """`la1`, `la0.5`: what a tau's metric names carry (`eval_la1_test_acc`)."""
    return f"la{tau:g}"


def adjusted_predictions(logits: torch.Tensor, log_prior: torch.Tensor,
                         tau: float) -> torch.Tensor:
    """argmax_c (z_c - tau log pi_c): (N, C), (C,) -> (N,) int64."""
    return (logits - tau * log_prior.to(logits.dtype)).argmax(dim=1)


class AdjustedCounts:
    """One confusion matrix per tau, counted on the device from the logits of an evaluation
    pass (`engine.evaluate(..., on_logits=counter.add)`): no second pass over the images.
    The logits are `logit_scale * model(x)`, the softmax the run trained (LDAM's s), on
    `log_prior`'s device."""

    def __init__(self, log_prior: torch.Tensor, taus: Sequence[float], num_classes: int):
        from cifarctl.engine import EvalCounts

        self.log_prior, self.taus, self.num_classes = log_prior, list(taus), num_classes
        self.counts = [EvalCounts.zeros(num_classes, log_prior.device) for _ in self.taus]

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Count one batch: float logits (B, C), labels (B,)."""
        import torch

        for tau, count in zip(self.taus, self.counts):
            pred = adjusted_predictions(logits, self.log_prior, tau)  # (B,)
            count.confusion.view(-1).index_add_(0, y * self.num_classes + pred,
                                                torch.ones_like(y))


def adjusted_counts(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    log_prior: torch.Tensor, taus: Sequence[float], *, num_classes: int,
                    logit_scale: float = 1.0) -> list[EvalCounts]:
    """One confusion matrix per tau over `batches` (on `log_prior`'s device), in eval mode
    (`AdjustedCounts` over an `engine.evaluate` pass)."""
    from cifarctl.engine import evaluate

    counter = AdjustedCounts(log_prior, taus, num_classes)
    evaluate(model, batches, num_classes=num_classes, logit_scale=logit_scale,
             on_logits=counter.add)
    return counter.counts


def adjusted_metrics(counts: Sequence[EvalCounts], acc_prefixes: Sequence[str]
                     ) -> dict[str, torch.Tensor]:
    """`{<prefix>_acc, <prefix>_acc_class_<i>}` per tau, as device tensors (no sync)."""
    from cifarctl.engine import eval_metrics

    out: dict[str, torch.Tensor] = {}
    for count, prefix in zip(counts, acc_prefixes):
        out |= {k: v for k, v in eval_metrics(prefix, count).items() if k != f"{prefix}_loss"}
    return out

