"""The softmax losses: cross-entropy, focal, their hybrid, and LDAM.

    loss_fn = build_loss("focal", train_counts, beta=0.999, gamma=2.0)

All four start from log p_t, the target's log-probability under the *unweighted* log-softmax
(SPEC 1.3: never exp(-weighted CE)); class weights multiply the finished per-example loss.
"""

import torch
import torch.nn.functional as F

from cifarctl.config import LossSection
from cifarctl.losses.base import ClassBalancedLoss
from cifarctl.losses.weights import ldam_margins


def target_log_prob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p_t = log_softmax(z)_y: (N, C), (N,) -> (N,), <= 0."""
    return F.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)


def focal_term(log_pt: torch.Tensor, gamma: float) -> torch.Tensor:
    """-(1 - p_t)^gamma log p_t from log p_t, elementwise; gamma = 0 gives -log p_t exactly.

    1 - p_t is -expm1(log p_t), which keeps its digits as p_t -> 1 where 1 - exp(.) rounds
    to 0. For gamma in (0, 1), (1 - p_t)^gamma has an infinite derivative at p_t = 1, and
    autograd would multiply it by log p_t = 0 into NaN; clamping the base at the smallest
    normal float keeps gamma * base^(gamma - 1) finite (the clamp passes no gradient, and the
    true gradient there is 0 anyway). The value changes only where the loss is below 1e-38.
    """
    one_minus_pt = (-torch.expm1(log_pt)).clamp_min(torch.finfo(log_pt.dtype).tiny)
    return -one_minus_pt.pow(gamma) * log_pt


class CrossEntropy(ClassBalancedLoss):
    """Softmax cross-entropy l_i = -log p_t; with beta > 0 the class-balanced softmax CE of
    Cui et al. 2019, Sec. 4."""

    def unweighted(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return -target_log_prob(logits, targets)


class FocalLoss(ClassBalancedLoss):
    """Softmax focal loss l_i = -(1 - p_t)^gamma log p_t (Lin et al. 2017, "Focal Loss for
    Dense Object Detection", Sec. 3.2, in its multi-class softmax form); with beta > 0 the
    class-balanced focal loss of Cui et al. 2019, Sec. 4. gamma = 0 is cross-entropy exactly."""

    def unweighted(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return focal_term(target_log_prob(logits, targets), self.params.gamma)


class HybridLoss(ClassBalancedLoss):
    """l_i = CE_i + (1 - alpha) FL_i: the write-up's proposed mix of cross-entropy and focal
    (SPEC 1.3). The class weights (beta, drw_epoch) multiply the whole sum."""

    def unweighted(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_pt = target_log_prob(logits, targets)
        return -log_pt + (1 - self.params.alpha) * focal_term(log_pt, self.params.gamma)


class LDAMLoss(ClassBalancedLoss):
    """Label-distribution-aware margin loss (Cao et al. 2019, Sec. 3.2):

        l_i = -log( e^{s (z_y - m_y)} / (e^{s (z_y - m_y)} + sum_{j != y} e^{s z_j}) )

    with margins m_c proportional to n_c^(-1/4), the largest `max_m` (`ldam_margins`), and
    logit scale `s`; meant for the cosine classifier (`models.heads`). LDAM-DRW is
    `build_loss("ldam", counts, beta=0.9999, drw_epoch=160)`.
    """

    def __init__(self, class_counts: list[int], params: LossSection):
        super().__init__(class_counts, params)
        self.register_buffer("margins", ldam_margins(class_counts, params.max_m), persistent=False)

    def unweighted(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        margin = self.margins[targets].to(logits.dtype).unsqueeze(1)        # (N, 1)
        # subtract m_y from the target logit only: (N, C)
        shifted = logits.scatter_add(1, targets.unsqueeze(1), -margin)
        return -target_log_prob(self.params.s * shifted, targets)
