"""Per-class numbers derived from the training class counts: class-balanced weights, LDAM margins.

    cb_weights([5000, 2997, ..., 50], beta=0.9999)   # (C,) float64, sums to C
    ldam_margins([5000, ..., 50], max_m=0.5)         # (C,) float64, largest 0.5

Pure functions of their inputs (STYLE principle 8), in float64 so the losses can round once.
"""

from collections.abc import Sequence
from numbers import Integral

import torch

from cifarctl.errors import UsageError


def counts_tensor(counts: Sequence[int]) -> torch.Tensor:
    """The class counts as (C,) float64, or `UsageError` if any is not a positive integer."""
    values = list(counts)
    if len(values) < 2:
        raise UsageError(f"class counts must name at least 2 classes, got {values}")
    if not all(isinstance(n, Integral) and not isinstance(n, bool) and n > 0 for n in values):
        raise UsageError(f"class counts must be positive integers (every class needs training "
                         f"images), got {values}")
    return torch.tensor([int(n) for n in values], dtype=torch.float64)


def cb_weights(counts: Sequence[int], beta: float) -> torch.Tensor:
    """Class-balanced weights of Cui et al. 2019: w_c = (1 - beta) / (1 - beta^n_c), summing to C.

        cb_weights([5000, 50], 0.0)    # tensor([1., 1.]): beta = 0 is no re-weighting

    w_c is the inverse of the effective number of samples E_n = (1 - beta^n) / (1 - beta)
    ("Class-Balanced Loss Based on Effective Number of Samples", Sec. 3), normalised so that
    sum_c w_c = C (SPEC 1.3, as in their reference code), which also cancels the constant
    (1 - beta). beta -> 1 approaches inverse class frequency. Returns (C,) float64 on the CPU.
    """
    if not 0 <= beta < 1:
        raise UsageError(f"beta must be in [0, 1), got {beta}: 0 means no re-weighting, values "
                         f"towards 1 approach inverse class frequency (e.g. 0.9999), and beta = 1 "
                         f"makes every weight (1 - beta) / (1 - beta^n) = 0/0")
    n = counts_tensor(counts)  # (C,)
    # 1 - beta^n as -expm1(n log beta) keeps its digits when beta^n is close to 1 (beta near 1,
    # small n); beta = 0 gives log 0 = -inf and 1 - 0 = 1, i.e. all-ones weights.
    unnormalised = 1 / -torch.expm1(n * torch.tensor(beta, dtype=torch.float64).log())  # (C,)
    return unnormalised * (len(n) / unnormalised.sum())


def ldam_margins(counts: Sequence[int], max_m: float) -> torch.Tensor:
    """LDAM margins of Cao et al. 2019: m_c proportional to n_c^(-1/4), the largest `max_m`.

        ldam_margins([5000, 50], 0.5)  # tensor([0.1581, 0.5000])

    "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss", Sec. 3.2: the
    margin Delta_j = C / n_j^(1/4), C chosen so the largest margin is `max_m` (0.5 in their
    CIFAR experiments).
    """
    margins = counts_tensor(counts) ** -0.25  # (C,)
    return margins * (max_m / margins.max())
