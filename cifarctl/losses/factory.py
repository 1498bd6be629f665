"""`build_loss`: every loss of the study by name, from the loss config and the class counts.

    loss_fn = build_loss("ldam", train_counts, beta=0.9999, drw_epoch=160)  # LDAM-DRW
"""

from dataclasses import fields
from typing import Any

from cifarctl.errors import UsageError
from cifarctl.losses import canonical_name
from cifarctl.losses.base import ClassBalancedLoss, LossParams
from cifarctl.losses.sigmoid import SigmoidCrossEntropy, SigmoidFocalLoss
from cifarctl.losses.softmax import CrossEntropy, FocalLoss, HybridLoss, LDAMLoss

# one entry per name of `LOSS_NAMES` (the tests check the two agree)
_LOSSES: dict[str, type[ClassBalancedLoss]] = {
    "ce": CrossEntropy,
    "focal": FocalLoss,
    "sigmoid": SigmoidCrossEntropy,
    "sigmoid-focal": SigmoidFocalLoss,
    "ldam": LDAMLoss,
    "hybrid": HybridLoss,
}


def build_loss(name: str, class_counts: list[int], *, beta: float = 0.0, gamma: float = 1.0,
               **params: Any) -> ClassBalancedLoss:
    """The loss `name` for a training set with `class_counts` images per class.

        build_loss("focal", [5000, 2997, ..., 50], beta=0.999, gamma=2.0)

    `params` are the other loss parameters: `drw_epoch`, `alpha`, `max_m`, `s` (see
    `LossParams` for meaning and defaults). Every loss accepts all of them, as the run config
    always carries them, and uses those it needs (gamma: focal, sigmoid-focal, hybrid; alpha:
    hybrid; max_m and s: ldam; beta and drw_epoch: all). Each is validated either way; an
    unknown name, a bad value or bad counts raise `UsageError`.
    """
    loss_class = _LOSSES[canonical_name(name)]
    known = [f.name for f in fields(LossParams)]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise UsageError(f"unknown loss parameter {', '.join(unknown)}; the loss parameters "
                         f"are: {', '.join(known)}")
    return loss_class(class_counts, LossParams(beta=beta, gamma=gamma, **params))
