"""What every loss shares: its validated parameters, class weights with deferred re-weighting,
and the reduction.

    loss_fn = FocalLoss(train_counts, LossParams(beta=0.9999, gamma=1.0, drw_epoch=160))
    loss_fn.set_epoch(epoch)                  # at the start of every epoch
    loss = loss_fn(logits, targets)           # (N, C), (N,) -> scalar

Reduction, for every loss: sum_i w_{y_i} l_i / N, the batch mean of weighted per-example losses
(Cui et al. 2019's convention). `nn.CrossEntropyLoss(weight=w)` divides by sum_i w_{y_i}
instead, so it differs from ours whenever the weights are not all ones.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from cifarctl.errors import UsageError
from cifarctl.losses.weights import cb_weights


@dataclass(frozen=True)
class LossParams:
    """Every dial of the loss family, validated once; each loss reads the ones it uses.

    `beta` is checked by `cb_weights` when a loss is built, with the counts.
    """

    beta: float = 0.0             # class-balanced weighting in [0, 1); 0 = unweighted (Cui et al.)
    gamma: float = 1.0            # focal focusing parameter >= 0; 0 = cross-entropy (Lin et al.)
    drw_epoch: int | None = None  # deferred re-weighting: unweighted before it (Cao et al.)
    alpha: float = 0.5            # hybrid = CE + (1 - alpha) * focal, in [0, 1] (SPEC 1.3)
    max_m: float = 0.5            # LDAM: largest margin (Cao et al.'s CIFAR setting)
    s: float = 30.0               # LDAM: logit scale (Cao et al.)

    def __post_init__(self) -> None:
        drw = self.drw_epoch
        checks = [
            (self.gamma >= 0 and math.isfinite(self.gamma),
             f"gamma must be a finite number >= 0, got {self.gamma} (gamma = 0 is cross-entropy)"),
            (0 <= self.alpha <= 1,
             f"alpha must be in [0, 1], got {self.alpha} (hybrid loss = CE + (1 - alpha) * focal)"),
            (drw is None or (isinstance(drw, int) and not isinstance(drw, bool) and drw >= 0),
             f"drw_epoch must be an epoch >= 0 (or None for no deferral), got {drw!r}"),
            (self.max_m > 0 and math.isfinite(self.max_m),
             f"max_m (LDAM's largest margin) must be a finite number > 0, got {self.max_m}"),
            (self.s > 0 and math.isfinite(self.s),
             f"s (LDAM's logit scale) must be a finite number > 0, got {self.s}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)


class ClassBalancedLoss(nn.Module):
    """Base of every loss: `forward` = sum_i w_{y_i} l_i / N with l_i from `unweighted`.

    The weights w are `cb_weights(counts, beta)` (all ones for beta = 0). With `drw_epoch`
    they are all ones before that epoch and class-balanced from it: deferred re-weighting,
    Cao et al. 2019, Sec. 3.3 (they switch at epoch 160 of 200). `set_epoch` switches them by
    copying into the same buffer, so a compiled graph that reads it never recompiles.
    """

    def __init__(self, class_counts: list[int], params: LossParams = LossParams()):
        super().__init__()
        balanced = cb_weights(class_counts, params.beta).float()  # (C,); validates both
        self.params = params
        self.num_classes = len(balanced)
        # Buffers follow `.to(device)`; derived from the counts, so kept out of state_dict.
        self.register_buffer("balanced_weight", balanced, persistent=False)
        self.register_buffer("class_weight", balanced.clone(), persistent=False)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Call at the start of every epoch; only deferred re-weighting changes anything."""
        if self.params.drw_epoch is None:
            return
        if epoch >= self.params.drw_epoch:
            self.class_weight.copy_(self.balanced_weight)
        else:
            self.class_weight.fill_(1.0)

    def unweighted(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-example loss l_i before class weighting: (N, C) float32, (N,) -> (N,)."""
        raise NotImplementedError

    def per_example(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Weighted per-example losses w_{y_i} l_i, (N,): for callers that reduce themselves."""
        if logits.shape[-1] != self.num_classes:
            raise UsageError(f"the model gives {logits.shape[-1]} logits per image but the loss "
                             f"was built for {self.num_classes} classes")
        # float32 even under bf16 autocast: exp/log of bf16 logits lose the small losses.
        return self.class_weight[targets] * self.unweighted(logits.float(), targets)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.per_example(logits, targets).mean()

    def prepare_model(self, model: nn.Module) -> set[str]:
        """Initialise what this loss needs in `model`; return parameter names to exempt from
        weight decay (pass them to `cifarctl.optim.build_optimizer(no_decay=...)`).

        Checks that `model.classifier` has one output per class of the counts.
        """
        outputs = model.classifier.out_features
        if outputs != self.num_classes:
            raise UsageError(f"the model has {outputs} outputs but the class counts name "
                             f"{self.num_classes} classes")
        return set()
