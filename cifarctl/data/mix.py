"""mixup and CutMix on the device: mixed batches, their targets, the loss and accuracy of them.

    spec = MixSpec.of(cfg.data)                       # None when mixing is off
    mix = BatchMixer(spec, seed=0, epoch=3, device)   # its draws: a pure function of (seed, epoch)
    x, targets = mix(x, y)     # x (B, 3, H, W) float, targets (B, 3) float64: [y_a, y_b, lambda]
    loss = mixed_loss(loss_fn.per_example, logits, targets)      # (B,)
    correct = hits(logits, targets)                              # (B,)

mixup (Zhang et al. 2018, facebookresearch/mixup-cifar10 `mixup_data`): one lambda ~
Beta(alpha, alpha) per batch, x = lambda x + (1 - lambda) x[perm]. CutMix (Yun et al. 2019,
clovaai/CutMix-PyTorch `rand_bbox`): one box per batch, of side sqrt(1 - lambda) times the
image's at a uniform centre, clipped at the border, pasted from x[perm]; lambda is then
recomputed as the share of the image left unpasted. A batch is mixed with probability
`mix_prob`; with both on, a mixed batch takes CutMix or mixup with probability 1/2 (timm's
`Mixup(switch_prob=0.5)`).

A batch left unmixed carries [y, y, 1], so an epoch's targets keep one shape. Every loss
of the registry, and the logged training accuracy (as the reference code counts it), is the
convex combination over the pair, each label with its own class weight. Every draw (coin,
lambda, permutation, box) is from a host generator seeded by (seed, epoch): the same on
every device, no host sync.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cifarctl.data.streams import MIX, host_generator, to_device


@dataclass(frozen=True)
class MixSpec:
    """A run's mixing: Beta parameters (0 = that method off) and the chance a batch mixes."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0

    @classmethod
    def of(cls, data: Any) -> MixSpec | None:
        """The mixing a config's `data` section asks for; None when neither method is on."""
        if not (data.mixup_alpha or data.cutmix_alpha):
            return None
        return cls(data.mixup_alpha, data.cutmix_alpha, data.mix_prob)


def pack_targets(y_a: torch.Tensor, y_b: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """(B,), (B,), lambda -> (B, 3) float64 [y_a, y_b, lambda]: the labels are exact in it."""
    lam = torch.as_tensor(lam, dtype=torch.float64, device=y_a.device).expand(y_a.shape)
    return torch.stack([y_a.double(), y_b.double(), lam], dim=-1)


def unmixed_targets(y: torch.Tensor) -> torch.Tensor:
    """Labels (..., ) as mixed targets (..., 3) of lambda 1: [y, y, 1]."""
    return pack_targets(y, y, 1.0)


def cutmix_box(lam: float, height: int, width: int, rng: np.random.Generator
               ) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of CutMix's box for `lam`, as `rand_bbox` draws it: sides
    int(side * sqrt(1 - lam)), centre uniform over the pixels, clipped at the border."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    return int(top), int(bottom), int(left), int(right)


class BatchMixer:
    """One epoch's mixing of a loader's batches, drawn in batch order from (seed, epoch)."""

    def __init__(self, spec: MixSpec, *, seed: int, epoch: int, device: torch.device) -> None:
        self.spec, self.device = spec, device
        self.rng = host_generator(seed, epoch, MIX)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) float, y (B,) -> mixed x, targets (B, 3) float64."""
        spec, rng = self.spec, self.rng
        if not rng.random() < spec.prob:
            return x, unmixed_targets(y)
        cutmix = spec.cutmix_alpha > 0 and (spec.mixup_alpha == 0 or rng.random() < 0.5)
        alpha = spec.cutmix_alpha if cutmix else spec.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        perm = to_device(torch.from_numpy(rng.permutation(len(y))), self.device)  # (B,)
        if cutmix:
            top, bottom, left, right = cutmix_box(lam, x.shape[-2], x.shape[-1], rng)
            x = x.clone()
            x[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (x.shape[-2] * x.shape[-1])
        else:
            x = lam * x + (1.0 - lam) * x[perm]
        return x, pack_targets(y, y[perm], lam)


def mixed_loss(per_example: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """lambda l(z, y_a) + (1 - lambda) l(z, y_b) per example: (N, C), (N, 3) -> (N,), where
    `per_example` is a loss's weighted per-example loss (each label with its class weight)."""
    y_a, y_b = targets[:, 0].long(), targets[:, 1].long()
    loss_a, loss_b = per_example(logits, y_a), per_example(logits, y_b)
    lam = targets[:, 2].to(loss_a.dtype)
    return lam * loss_a + (1 - lam) * loss_b


def hits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Correctness per example: [pred = y] for labels (B[, K]); lambda [pred = y_a] +
    (1 - lambda) [pred = y_b] for mixed targets (B[, K], 3). Logits (B, C[, K])."""
    pred = logits.argmax(dim=1)  # (B[, K])
    if not targets.is_floating_point():
        return pred == targets
    lam = targets[..., 2]
    return lam * (pred == targets[..., 0]) + (1 - lam) * (pred == targets[..., 1])
