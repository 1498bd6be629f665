"""Every loss of the study by name, from the config's loss section and the class counts.

    loss_fn = loss_from_config(cfg.loss, data.train_counts)                 # a run's loss
    loss_fn = build_loss("ldam", train_counts, beta=0.9999, drw_epoch=160)  # LDAM-DRW by hand
"""

import dataclasses
from typing import Any

from cifarctl.config import LossSection, loss_section
from cifarctl.errors import UsageError
from cifarctl.losses.adjusted import BalancedSoftmaxLoss, LogitAdjustedLoss, VSLoss
from cifarctl.losses.base import ClassBalancedLoss
from cifarctl.losses.sigmoid import SigmoidCrossEntropy, SigmoidFocalLoss
from cifarctl.losses.softmax import CrossEntropy, FocalLoss, HybridLoss, LDAMLoss

# one entry per name of `LOSS_NAMES` (the tests check the two agree)
_LOSSES: dict[str, type[ClassBalancedLoss]] = {
    "ce": CrossEntropy, "focal": FocalLoss, "sigmoid": SigmoidCrossEntropy,
    "sigmoid-focal": SigmoidFocalLoss, "ldam": LDAMLoss, "hybrid": HybridLoss,
    "la": LogitAdjustedLoss, "balanced-softmax": BalancedSoftmaxLoss, "vs": VSLoss,
}

# the loss parameters: every field of the loss section but the loss's name
_PARAMS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(LossSection)
                                if f.name != "name")


def loss_from_config(loss_cfg: LossSection, class_counts: list[int]) -> ClassBalancedLoss:
    """The loss a config's loss section describes, for `class_counts` images per class. The
    section is validated again (into a copy the loss keeps): a hand-built one is checked too."""
    checked = loss_section(**dataclasses.asdict(loss_cfg))
    return _LOSSES[checked.name](class_counts, checked)


def build_loss(name: str, class_counts: list[int], *, beta: float = 0.0, gamma: float = 1.0,
               **params: Any) -> ClassBalancedLoss:
    """The loss `name` for a training set with `class_counts` images per class.

        build_loss("focal", [5000, 2997, ..., 50], beta=0.999, gamma=2.0)

    `params` are the other fields of `cifarctl.config.LossSection`; every loss accepts all of
    them and uses those it needs. Keywords are taken as given: `gamma` defaults to 1 here for
    `vs` too (`--loss vs` gets VS's 0.3). Each is validated as the config validates it.
    """
    unknown = sorted(set(params) - set(_PARAMS))
    if unknown:
        raise UsageError(f"unknown loss parameter {', '.join(unknown)}; the loss parameters "
                         f"are: {', '.join(_PARAMS)}")
    return loss_from_config(LossSection(name=name, beta=beta, gamma=gamma, **params),
                            class_counts)
