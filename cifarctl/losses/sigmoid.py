"""Cui et al. 2019's one-vs-all sigmoid losses: sigmoid cross-entropy and sigmoid focal.

    loss_fn = build_loss("sigmoid-focal", train_counts, beta=0.9999, gamma=1.0)
    no_decay = loss_fn.prepare_model(model)  # {"classifier.bias"}, set to -log(C - 1)

"Class-Balanced Loss Based on Effective Number of Samples", Sec. 4: each class j is its own
binary problem, with z^t_j = z_j for the target class and -z_j otherwise and
p^t_j = sigmoid(z^t_j); the loss of an example sums over the classes:

    l_i = sum_j (1 - p^t_j)^gamma * (-log p^t_j)

Both factors are softplus expressions, finite for any logit: -log sigmoid(z) = softplus(-z)
and (1 - p^t)^gamma = sigmoid(-z^t)^gamma = exp(-gamma softplus(z^t)). (Their reference code
writes the modulator as exp(-gamma y z - gamma log(1 + exp(-z))), which overflows in float32
for z < -88; softplus is the same quantity without the overflow.)
"""

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from cifarctl.config import LossSection
from cifarctl.errors import UsageError
from cifarctl.losses.base import ClassBalancedLoss


class SigmoidFocalLoss(ClassBalancedLoss):
    """The sigmoid focal loss above; its `prepare_model` sets the final bias to -log(C - 1).

    Cui et al. (implementation notes for the sigmoid losses) start every class at the prior
    pi = 1/C, i.e. bias b = -log((1 - pi) / pi) = -log(C - 1), so the first steps are not
    swamped by the C - 1 negatives, and exempt that bias from weight decay, which would pull
    it back to 0.
    """

    def unweighted(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        is_target = F.one_hot(targets, self.num_classes).bool()  # (N, C)
        z_t = torch.where(is_target, logits, -logits)             # (N, C)
        modulator = torch.exp(-self.params.gamma * F.softplus(z_t))  # (1 - p^t)^gamma
        return (modulator * F.softplus(-z_t)).sum(dim=1)          # (N,)

    def prepare_model(self, model: nn.Module) -> set[str]:
        super().prepare_model(model)
        bias = model.classifier.bias
        if bias is None:
            raise UsageError("the sigmoid losses initialise the classifier's bias, but this "
                             "model's classifier has none")
        with torch.no_grad():
            bias.fill_(-math.log(self.num_classes - 1))
        # the bias's name as the optimizer will see it, wherever the classifier sits
        return {name for name, p in model.named_parameters() if p is bias}


class SigmoidCrossEntropy(SigmoidFocalLoss):
    """The one-vs-all sigmoid cross-entropy: the sigmoid focal loss at gamma = 0."""

    def __init__(self, class_counts: list[int], params: LossSection):
        super().__init__(class_counts, replace(params, gamma=0.0))
