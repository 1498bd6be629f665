"""What every loss shares: class weights with deferred re-weighting, and the reduction.

    loss_fn = FocalLoss(train_counts, loss_section(name="focal", beta=0.9999, drw_epoch=160))
    loss_fn.set_epoch(epoch)                  # at the start of every epoch
    loss = loss_fn(logits, targets)           # (N, C), (N,) -> scalar

Reduction, for every loss: sum_i w_{y_i} l_i / N, the batch mean of weighted per-example losses
(Cui et al. 2019's convention). `nn.CrossEntropyLoss(weight=w)` divides by sum_i w_{y_i}
instead, so it differs from ours whenever the weights are not all ones. Every loss also takes
mixup / CutMix targets (`cifarctl.data.mix`) and, with `loss.smoothing`, smooths its labels
(`cifarctl.losses.smoothing`).
"""

import torch
from torch import nn

from cifarctl.config import LossSection
from cifarctl.data.mix import mixed_loss
from cifarctl.errors import UsageError
from cifarctl.losses.smoothing import smoothed, smoothing_factors
from cifarctl.losses.weights import cb_weights


class ClassBalancedLoss(nn.Module):
    """Base of every loss: `forward` = sum_i w_{y_i} l_i / N with l_i from `unweighted`.

    With `drw_epoch` the weights are all ones before that epoch and class-balanced from it:
    deferred re-weighting, Cao et al. 2019, Sec. 3.3 (they switch at epoch 160 of 200).
    `set_epoch` copies into the same buffer, so a compiled graph that reads it never recompiles.
    """

    def __init__(self, class_counts: list[int], params: LossSection):
        super().__init__()
        balanced = cb_weights(class_counts, params.beta)  # (C,) float64; validates the counts
        self.params = params  # the loss section it was built from: each loss reads its own dials
        self.num_classes = len(balanced)
        # Buffers follow `.to(device)`; derived from the counts, so kept out of state_dict.
        # Kept in float64 (as computed) and cast to the compute dtype per batch.
        self.register_buffer("balanced_weight", balanced, persistent=False)
        self.register_buffer("class_weight", balanced.clone(), persistent=False)
        # label smoothing, (C,) float64 or None (`losses.smoothing`, issue 19)
        self.register_buffer("smoothing", smoothing_factors(class_counts, params),
                             persistent=False)
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
        """Per-example loss l_i before class weighting: (N, C) float32 or float64, (N,) ->
        (N,) of the same dtype."""
        raise NotImplementedError

    def per_example(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Weighted per-example losses w_{y_i} l_i, (N,): for callers that reduce themselves."""
        if logits.shape[-1] != self.num_classes:
            raise UsageError(f"the model gives {logits.shape[-1]} logits per image but the loss "
                             f"was built for {self.num_classes} classes")
        # float32 even under bf16/fp16 autocast, whose exp/log lose the small losses; float64
        # logits stay float64 (references, exact comparisons)
        x = logits if logits.dtype == torch.float64 else logits.float()   # (N, C)
        loss = (self.unweighted(x, targets) if self.smoothing is None
                else smoothed(self.unweighted, x, targets, self.smoothing))
        return self.class_weight[targets].to(x.dtype) * loss

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.is_floating_point():  # mixup / CutMix targets (N, 3): `data.mix`
            return mixed_loss(self.per_example, logits, targets).mean()
        return self.per_example(logits, targets).mean()

    def prepare_model(self, model: nn.Module) -> set[str]:
        """Initialise what this loss needs in `model` (one output per class, checked); return
        the parameter names to exempt from weight decay (`build_optimizer(no_decay=...)`)."""
        outputs = model.classifier.out_features
        if outputs != self.num_classes:
            raise UsageError(f"the model has {outputs} outputs but the class counts name "
                             f"{self.num_classes} classes")
        return set()
