"""Logit-adjusted losses: cross-entropy on logits shifted (and scaled) by the class prior.

    loss_fn = build_loss("la", train_counts, tau=1.0)          # Menon et al. 2021
    loss_fn = build_loss("balanced-softmax", train_counts)      # Ren et al. 2020
    loss_fn = build_loss("vs", train_counts, gamma=0.3, tau=1)  # Kini et al. 2021

Each trains on adjusted logits and is evaluated on the plain ones, as their papers do: the
adjustment moves the decision boundaries towards the frequent classes during training, so
the plain logits favour the rare ones at test time. With pi_c = n_c / sum n the training
prior and n_max the largest class:

    la                z_c + tau log pi_c                    (Menon et al. 2021, eq. 10)
    balanced-softmax  z_c + log n_c                         (Ren et al. 2020, eq. 4)
    vs                (n_c / n_max)^gamma z_c + tau log pi_c  (Kini et al. 2021, eq. 3)

`balanced-softmax` is `la` at tau = 1: log n_c and log pi_c differ by log sum n, a shift of
every logit that the softmax cancels. The adjustments are float64, cast per batch.
"""

import torch

from cifarctl.config import LossSection
from cifarctl.losses.base import ClassBalancedLoss
from cifarctl.losses.softmax import target_log_prob
from cifarctl.losses.weights import counts_tensor


def log_prior(counts: list[int]) -> torch.Tensor:
    """log pi_c = log(n_c / sum n): (C,) float64, every entry < 0 for two classes or more."""
    n = counts_tensor(counts)  # (C,)
    return torch.log(n / n.sum())


class AdditiveAdjustment(ClassBalancedLoss):
    """Cross-entropy of z + offset, the offset a (C,) float64 buffer set by subclasses."""

    def __init__(self, class_counts: list[int], params: LossSection, offset: torch.Tensor):
        super().__init__(class_counts, params)
        self.register_buffer("offset", offset, persistent=False)  # (C,) float64

    def unweighted(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return -target_log_prob(logits + self.offset.to(logits.dtype), targets)


class LogitAdjustedLoss(AdditiveAdjustment):
    """Menon et al. 2021, "Long-tail learning via logit adjustment", eq. 10: cross-entropy
    of z_c + tau log pi_c; tau = 1 is their CIFAR-10-LT setting, tau = 0 plain CE."""

    def __init__(self, class_counts: list[int], params: LossSection):
        super().__init__(class_counts, params, params.tau * log_prior(class_counts))


class BalancedSoftmaxLoss(AdditiveAdjustment):
    """Ren et al. 2020, "Balanced Meta-Softmax for Long-Tailed Visual Recognition", eq. 4:
    cross-entropy of z_c + log n_c (the logit-adjusted loss at tau = 1; `loss.tau` unused)."""

    def __init__(self, class_counts: list[int], params: LossSection):
        super().__init__(class_counts, params, counts_tensor(class_counts).log())


class VSLoss(AdditiveAdjustment):
    """Vector-scaling loss, Kini et al. 2021, "Label-Imbalanced and Group-Sensitive
    Classification under Overparameterization", eq. 3: cross-entropy of Delta_c z_c + iota_c
    with Delta_c = (n_c / n_max)^gamma and iota_c = tau log pi_c. gamma = tau = 0 is CE.
    Their code (orparask/VS-Loss) divides z by (n_max / n_c)^gamma, the same Delta.
    """

    def __init__(self, class_counts: list[int], params: LossSection):
        super().__init__(class_counts, params, params.tau * log_prior(class_counts))  # iota
        n = counts_tensor(class_counts)  # (C,)
        self.register_buffer("scale", (n / n.max()) ** params.gamma, persistent=False)

    def unweighted(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return super().unweighted(logits * self.scale.to(logits.dtype), targets)  # Delta z
