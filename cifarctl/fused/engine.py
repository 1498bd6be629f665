"""The engine's pieces for K fused members: their losses, running sums and evaluation.

    loss = FusedLoss([m.loss_fn for m in members])   # (B, C, K), (B, K) -> (K,)
    counts = evaluate_fused(model, batches, num_classes=10, logit_scales=[1.0] * K)

`cifarctl.engine.train_steps` trains a `FusedModel` with these as it trains one model: the
summed loss gives each member its own gradient, as members share no parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cifarctl.engine import EvalCounts, TrainSums, autocast_for
from cifarctl.fused.data import FusedBatches
from cifarctl.fused.models import FusedModel


class FusedLoss(nn.Module):
    """The members' own losses on their own logits: (B, C, K), (B, K) -> (K,)."""

    def __init__(self, losses: list[nn.Module]) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def set_epoch(self, epoch: int) -> None:
        for loss in self.losses:
            loss.set_epoch(epoch)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.stack([loss(logits[:, :, k], targets[:, k])
                            for k, loss in enumerate(self.losses)])


def member_sums(sums: TrainSums, k: int) -> TrainSums:
    """Member k's part of fused running sums: 0-dim tensors, as an unfused run's."""
    return TrainSums(sums.loss_sum[k], sums.correct[k], sums.seen[k], sums.nonfinite[k],
                     sums.steps_done)


def stack_sums(states: Sequence[dict[str, Any]], device: torch.device) -> TrainSums:
    """The members' saved partial-epoch sums (`TrainSums.state_dict()`) as fused sums."""
    parts = [TrainSums.from_state(s, device) for s in states]
    stacked = {name: torch.stack([getattr(p, name) for p in parts])
               for name in ("loss_sum", "correct", "seen", "nonfinite")}
    return TrainSums(**stacked, steps_done=parts[0].steps_done)


@torch.no_grad()
def evaluate_fused(model: FusedModel, batches: FusedBatches, *, num_classes: int,
                   logit_scales: Sequence[float]) -> list[EvalCounts]:
    """`cifarctl.engine.evaluate` for each member at once: one fused pass, K counts
    (member k's logits scaled by `logit_scales[k]`)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counts = [EvalCounts.zeros(num_classes, device) for _ in range(model.members)]
    for x, y in batches.epoch(0):  # x (B, K 3, H, W), y (B, K)
        with autocast_for(device):
            logits = model(x).float()  # (B, C, K)
        for k, member_counts in enumerate(counts):
            member_counts.add(logits[:, :, k] * logit_scales[k], y[:, k])
    model.train(was_training)
    return counts
