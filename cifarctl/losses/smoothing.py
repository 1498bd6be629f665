"""Label smoothing for every softmax loss: a constant factor, or MiSLAS's label-aware factors.

    eps = smoothing_factors([5000, ..., 50], loss_cfg)     # (C,) float64, or None when off
    l = smoothed(loss_fn.unweighted, logits, targets, eps)  # (N,)

Label smoothing (Szegedy et al. 2016, Sec. 7) trains on the target distribution
q = (1 - eps) onehot(y) + eps / C. For cross-entropy the loss is -sum_c q_c log p_c; for any
softmax loss l(z, c) ("the loss if the target were c") it is the same expectation,

    sum_c q_c l(z, c) = (1 - eps_y) l(z, y) + eps_y mean_c l(z, c),

so focal, hybrid and LDAM (whose margin follows the candidate target c) smooth the same way.
Class weights multiply the finished per-example loss, as for every loss here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from cifarctl.config.rules import LABEL_AWARE


def label_aware_factors(counts: Sequence[int], head: float, tail: float) -> torch.Tensor:
    """MiSLAS's per-class smoothing (Zhong et al. 2021, eq. 4; the `concave` shape of their
    `LabelAwareSmoothing`): eps_c = tail + (head - tail) sin(pi/2 (n_c - n_min) / (n_max - n_min)).

        label_aware_factors([5000, 50], head=0.3, tail=0.0)   # tensor([0.3000, 0.0000])

    The most frequent class, the most over-confident, is smoothed the most (`head`), the rarest
    the least (`tail`): their code and configs (CIFAR-10: head 0.3, tail 0.0), behind the
    published 82.5 %; SPEC 4's one-line summary words the direction the other way round. A
    balanced set gets `head` everywhere (their formula divides 0 by 0 there). Returns (C,)
    float64 on the CPU.
    """
    n = torch.tensor(list(counts), dtype=torch.float64)  # (C,)
    spread = float(n.max() - n.min())
    if spread == 0:
        return torch.full_like(n, head)
    return tail + (head - tail) * torch.sin((n - n.min()) * math.pi / (2 * spread))


def smoothing_factors(counts: Sequence[int], loss_cfg: Any) -> torch.Tensor | None:
    """Each class's smoothing factor eps_c under `loss_cfg` (a checked `LossSection`): (C,)
    float64, or None when smoothing is off (the loss then computes exactly as without it)."""
    if loss_cfg.smoothing == LABEL_AWARE:
        return label_aware_factors(counts, loss_cfg.smoothing_head, loss_cfg.smoothing_tail)
    if loss_cfg.smoothing == 0:
        return None
    return torch.full((len(counts),), float(loss_cfg.smoothing), dtype=torch.float64)


def smoothed(unweighted: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             logits: torch.Tensor, targets: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """(1 - eps_y) l(z, y) + eps_y mean_c l(z, c) per example: (N, C), (N,), (C,) -> (N,).

    `unweighted(logits, targets)` is a loss's per-example l; it is evaluated once for every
    candidate target, on the logits repeated C times (one batched call, no loop over classes).
    """
    n, c = logits.shape
    candidates = torch.arange(c, device=logits.device).repeat_interleave(n)     # (C N,)
    every = unweighted(logits.repeat(c, 1), candidates).view(c, n).T            # (N, C)
    own = every.gather(1, targets.unsqueeze(1)).squeeze(1)                       # (N,)
    e = eps.to(every.dtype)[targets]                                             # (N,)
    return (1 - e) * own + e * every.mean(dim=1)
