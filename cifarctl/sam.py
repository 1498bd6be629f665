"""Sharpness-aware minimisation (Foret et al. 2021) as the second pass of a training step.

    sam = Sam(model, rho=[0.05])            # one radius per member: K for a fused model
    loss.backward()                         # g = grad L(w) in every .grad
    sam.regrad(lambda: loss_fn(model(x), y).sum())   # .grad = grad L(w + e), w restored
    optimizer.step()                        # the base optimizer steps from w with it

SAM's step (Foret et al. 2021, Algorithm 1; davda54/sam `SAM.first_step` / `second_step`, the
implementation Rangwani et al. 2022 and Wang et al. 2023 build on): e = rho g / (||g|| + 1e-12)
with ||g|| the 2-norm over every parameter's gradient (weight decay is the base optimizer's);
the gradient is taken again at w + e, and the base optimizer steps from w with it. w is
restored by copying it back, so a step with rho = 0 is exactly a plain step. In a fused group
(`cifarctl.fused`) the norm, and so e, is each member's own, with its own rho.

BatchNorm's running statistics move once per step, in the first pass at w, as davda54/sam's
`bypass_bn.py` (`disable_running_stats`) has it (val-iisc/Saddle-LongTail and wang22ti/DDC
update them in both passes; the first pass's are those of the weights trained).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

EPS = 1e-12  # davda54/sam: rho / (||g|| + 1e-12)


@contextmanager
def running_stats_frozen(model: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm that uses batch statistics without updating its running ones."""
    layers = [m for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False  # forward then passes no running buffers to batch_norm
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


class Sam:
    """The ascent step of SAM for a model of K member-major stacked members (K = 1: one)."""

    def __init__(self, model: nn.Module, rho: Sequence[float] | torch.Tensor) -> None:
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        like = self.params[0]
        self.rho = torch.as_tensor(rho, dtype=like.dtype, device=like.device).reshape(-1)  # (K,)
        self.k = len(self.rho)

    def _member_rows(self, p: torch.Tensor, per_member: torch.Tensor) -> torch.Tensor:
        """(K,) values as one per row of `p`'s first dimension, broadcastable against p."""
        rows = per_member.repeat_interleave(p.shape[0] // self.k)
        return rows.view(-1, *([1] * (p.dim() - 1)))

    @torch.no_grad()
    def _ascent(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """e = rho g / (||g|| + eps), each member's norm over its own rows."""
        squares = torch.stack([g.pow(2).reshape(g.shape[0], -1).sum(1).view(self.k, -1).sum(1)
                               for g in grads]).sum(0)                       # (K,)
        scale = self.rho / (squares.sqrt() + EPS)                            # (K,)
        return [g * self._member_rows(g, scale) for g in grads]

    def regrad(self, loss_at: Callable[[], torch.Tensor]) -> None:
        """Replace each parameter's gradient g (from a first backward at w) by the gradient
        of `loss_at()` at w + e, BatchNorm's running statistics untouched; w is restored."""
        params = [p for p in self.params if p.grad is not None]
        steps = self._ascent([p.grad for p in params])
        with torch.no_grad():
            saved = [p.detach().clone() for p in params]
            torch._foreach_add_(params, steps)
        for p in params:
            p.grad = None
        with running_stats_frozen(self.model):
            loss_at().backward()
        with torch.no_grad():
            torch._foreach_copy_(params, saved)
