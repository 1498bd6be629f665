"""The learning-rate schedules as pure functions (STYLE principle 8).

    lr = lr_at(epoch=3, step=10, steps_per_epoch=97, base_lr=0.1, warmup=5,
               milestones=[160, 180], factors=[0.01, 0.01])
    lr = cosine_lr_at(epoch=3, step=10, steps_per_epoch=97, base_lr=0.1, warmup=5,
                      epochs=200, min_lr=0.0)

Linear warm-up, then step decay, as in the reference code of Cao et al. 2019 (LDAM-DRW,
`adjust_learning_rate`) and the CS7643 assignment: during epoch e < warmup the rate is
base_lr * (e + 1) / warmup; from epoch m_k on it is multiplied by factor_k. Here the warm-up
ramps per step, reaching the reference's value at the end of each warm-up epoch, so the
first steps of training are not taken at the full epoch's rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def lr_at(epoch: int, step: int, *, steps_per_epoch: int, base_lr: float, warmup: int,
          milestones: Sequence[int], factors: Sequence[float]) -> float:
    """Learning rate for `step` (0-based, within the epoch) of `epoch` (0-based)."""
    if warmup > 0 and epoch < warmup:
        return _warmup_lr(epoch, step, steps_per_epoch, base_lr, warmup)
    lr = base_lr
    for milestone, factor in zip(milestones, factors):
        if epoch >= milestone:
            lr *= factor
    return lr


def _warmup_lr(epoch: int, step: int, steps_per_epoch: int, base_lr: float,
               warmup: int) -> float:
    done = epoch * steps_per_epoch + step + 1  # steps taken once this one is done
    return base_lr * done / (warmup * steps_per_epoch)


def cosine_lr_at(epoch: int, step: int, *, steps_per_epoch: int, base_lr: float, warmup: int,
                 epochs: int, min_lr: float = 0.0) -> float:
    """`lr_at`'s warm-up, then cosine annealing from base_lr down to min_lr, per step.

    SGDR without restarts (Loshchilov & Hutter 2017, eq. 5): with t the steps taken since
    the warm-up and T the steps after it, lr = min_lr + (base_lr - min_lr)(1 + cos(pi t / T)) / 2:
    base_lr at the first step after the warm-up, their mean at the midpoint, min_lr once all
    T steps are taken (epoch = epochs, step 0).
    """
    if warmup > 0 and epoch < warmup:
        return _warmup_lr(epoch, step, steps_per_epoch, base_lr, warmup)
    t = (epoch - warmup) * steps_per_epoch + step
    total = max(epochs - warmup, 1) * steps_per_epoch
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * min(t, total) / total)) / 2


def schedule_warnings(*, epochs: int, warmup: int, milestones: Sequence[int]) -> list[str]:
    """Decay epochs inside the warm-up, which `lr_at` ignores: valid, but unlikely to be meant.
    Milestones past the last epoch are not flagged: short trials keep [160, 180] on purpose."""
    early = [m for m in milestones if m < min(warmup, epochs)]
    if not early:
        return []
    shown = ", ".join(map(str, early))
    after = (f"it applies from epoch {warmup + 1} on" if warmup < epochs
             else f"it never applies in {epochs} epoch{'s' * (epochs != 1)}")
    return [f"optim.steps {shown} {'falls' if len(early) == 1 else 'fall'} inside the "
            f"{warmup}-epoch warm-up (optim.warmup), which ignores decay: {after}; lower "
            f"optim.warmup (e.g. --set optim.warmup=1) or move the steps"]
