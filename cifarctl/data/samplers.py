"""Class-aware sampling: which training images an epoch's batches hold, drawn on the device.

    order = sampled_order(labels, "class-balanced", generator)   # (n,) int64 rows of the split
    class_probabilities([5000, ..., 50], "sqrt")                  # (C,) float64, sums to 1

Kang et al. 2020, "Decoupling Representation and Classifier for Long-Tailed Recognition",
Sec. 3.1: an image of class j is drawn with probability p_j = n_j^q / sum_i n_i^q, where
q = 1 is instance-balanced sampling (every image equally likely: `data.sampler: instance`,
the loader's plain shuffle), q = 0 class-balanced (each class equally likely) and q = 1/2
square-root sampling. An epoch draws as many images as the split holds (so the schedule
and a fused group's steps are those of instance sampling), with replacement: image i with
probability p_{y_i} / n_{y_i}, one `torch.multinomial` over the split. The generator is the
loader's, a pure function of (seed, epoch), so a resumed run draws the same batches.
"""

from __future__ import annotations

import torch

# q of p_j proportional to n_j^q, per `data.sampler` (instance: q = 1, which the loader draws
# as its plain shuffle, each image once an epoch)
from cifarctl.config.rules import SAMPLER_EXPONENTS as EXPONENTS


def class_probabilities(counts: list[int] | torch.Tensor, sampler: str) -> torch.Tensor:
    """p_j = n_j^q / sum_i n_i^q for `sampler`'s q: (C,) float64; a class without images
    gets 0 (it cannot be drawn)."""
    n = torch.as_tensor(counts, dtype=torch.float64)  # (C,)
    raw = torch.where(n > 0, n.clamp_min(1) ** EXPONENTS[sampler], torch.zeros_like(n))
    return raw / raw.sum()


def sampled_order(labels: torch.Tensor, sampler: str, generator: torch.Generator) -> torch.Tensor:
    """n rows of a split with labels `labels` ((n,) int64, on the generator's device),
    drawn with replacement so that class j comes up with probability p_j: (n,) int64."""
    counts = torch.bincount(labels)  # (C,) over the classes present up to the largest label
    per_class = class_probabilities(counts, sampler).to(labels.device)  # (C,)
    weights = per_class[labels] / counts[labels]  # (n,): p_{y_i} / n_{y_i}, sums to 1
    return torch.multinomial(weights, len(labels), replacement=True, generator=generator)
