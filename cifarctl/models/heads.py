"""Classifier heads besides `nn.Linear`.

    head = NormedLinear(64, 10)              # logits cos(x, w_c) in [-1, 1]

Cao et al. (NeurIPS 2019, "Learning Imbalanced Datasets with Label-Distribution-Aware Margin
Loss") train LDAM with a normalised classifier: their reference code (kaidic/LDAM-DRW,
`models/resnet_cifar.py`, `NormedLinear`, used when `--loss_type LDAM`) gives the cosine of
the feature and each class's weight vector as the logit, and the loss multiplies by s = 30.
The margins (at most 0.5) are margins in cosine units there, so the published LDAM rows of
SPEC 2 assume this head. `create_model(..., classifier="normed")` puts it in place of a
model's final `nn.Linear`. Without it, s = 30 multiplies unbounded logits: LDAM-DRW on the
demo's setting (vanillacnn, synthetic LT-20, lr 0.05, 2 seeds, 2026-11-28) went NaN in the
first epoch with the linear head and reached 52.3 % test accuracy with this one; resnet32
LDAM-DRW on the real LT-100 set at the protocol's lr 0.1 (3 epochs, DRW from the third) ended
at 10.4 % (chance) with the linear head and 37.2 % with this one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NormedLinear(nn.Module):
    """Cosine classifier: `normalize(x) @ normalize(weight).T`, no bias; (N, in) -> (N, out).

    The weight is stored as `nn.Linear` stores it, (out_features, in_features), each row a
    class; the reference code keeps the transpose and normalises its columns, the same
    product. Initialised as there: uniform in [-1, 1], then each class vector scaled to unit
    norm (`renorm_(2, 1, 1e-5).mul_(1e5)` in the original).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.register_parameter("bias", None)  # none: a cosine has no offset
        with torch.no_grad():
            self.weight.uniform_(-1, 1)
            self.weight.div_(self.weight.norm(dim=1, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()

    @classmethod
    def replacing(cls, linear: nn.Linear) -> NormedLinear:
        """A fresh cosine head of `linear`'s shape, device and dtype (drawn from the RNG)."""
        return cls(linear.in_features, linear.out_features).to(linear.weight.device,
                                                               linear.weight.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
