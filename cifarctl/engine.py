"""One epoch of training and one pass of evaluation, returning plain tensors.

    sums = train_steps(model, batches, loss_fn, optimizer, lr_for_step=..., num_classes=10)
    counts = evaluate(model, batches, num_classes=10)

The engine decides nothing about where numbers go (STYLE principle 6, after ConvNeXt's
`engine.py`). Everything it returns stays on the device as tensors: the caller turns a whole
epoch's worth into Python floats with a single host sync (`to_host`). No `.item()` here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from cifarctl.data.mix import hits

if TYPE_CHECKING:
    from cifarctl.sam import Sam


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (issue 4's fast path); full float32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@dataclass
class TrainSums:
    """Running sums of one epoch on the device; saved in checkpoints for mid-epoch resume."""

    loss_sum: torch.Tensor  # () sum over examples of the training loss
    correct: torch.Tensor  # () correctly classified training examples (augmented)
    seen: torch.Tensor  # () examples seen
    nonfinite: torch.Tensor  # () bool: some step produced a NaN/inf loss
    steps_done: int = 0  # steps of this epoch already taken (host counter, no sync)

    @classmethod
    def zeros(cls, device: torch.device, members: int | None = None) -> TrainSums:
        """Empty sums: 0-dim, or (K,) for `members` fused runs."""
        shape = () if members is None else (members,)
        z = torch.zeros(shape, device=device)
        return cls(z.clone(), z.clone(), z.clone(), torch.zeros(shape, dtype=torch.bool,
                                                                device=device))

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state(cls, state: dict, device: torch.device) -> TrainSums:
        # clone: the sums are updated in place and must not write into the caller's state
        t = {k: v.to(device).clone() for k, v in state.items() if k != "steps_done"}
        return cls(**t, steps_done=int(state["steps_done"]))


def train_steps(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                loss_fn: nn.Module, optimizer: torch.optim.Optimizer, *,
                lr_for_step: Callable[[int], float], sums: TrainSums,
                should_stop: Callable[[], bool] = lambda: False,
                on_step: Callable[[TrainSums], None] | None = None,
                sam: Sam | None = None) -> TrainSums:
    """Train over `batches` (the rest of an epoch), accumulating into `sums` in place.

    Stops at a step boundary when `should_stop()` turns true (Ctrl-C / SIGTERM), to resume
    from `sums.steps_done`. With `sam`, each step takes its gradient at SAM's ascent point;
    the loss and accuracy summed are the first pass's, at the weights being trained.
    """
    model.train()
    device = sums.loss_sum.device
    for x, y in batches:  # x (B, 3, 32, 32) float, y (B,) int64
        if should_stop():
            break
        lr = lr_for_step(sums.steps_done)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits, loss = _forward(model, loss_fn, x, y, device)  # (B, C), ()
        optimizer.zero_grad(set_to_none=True)
        # A fused group of K models (issue 8) gives logits (B, C, K), labels (B, K), one loss
        # per member (K,) and sums of shape (K,); its members share no parameters, so the
        # gradient of the summed loss is each member's own. For one model .sum() is a no-op.
        loss.sum().backward()
        if sam is not None:  # the gradient at w + e replaces it (issue 19)
            sam.regrad(lambda x=x, y=y: _forward(model, loss_fn, x, y, device)[1].sum())
        optimizer.step()
        with torch.no_grad():
            n = y.shape[0]
            sums.loss_sum += loss.detach() * n
            sums.correct += hits(logits, y).sum(0)  # lambda-weighted for mixed targets
            sums.seen += n
            sums.nonfinite |= ~torch.isfinite(loss.detach())
        sums.steps_done += 1
        if on_step is not None:
            on_step(sums)
    return sums


def _forward(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    with autocast_for(device):
        logits = model(x)  # (B, C)
        return logits, loss_fn(logits.float(), y)


@dataclass
class EvalCounts:
    """Confusion matrix and summed cross-entropy of one evaluation pass, on the device."""

    confusion: torch.Tensor  # (C, C) int64, rows = true class, columns = prediction
    loss_sum: torch.Tensor  # () summed cross-entropy
    # (CALIBRATION_BINS, 3): per confidence bin, [examples, summed confidence, correct];
    # enough for the expected calibration error (Guo et al. 2017, eq. 3) without a sync.
    calibration: torch.Tensor

    @property
    def count(self) -> torch.Tensor:
        return self.confusion.sum()

    @classmethod
    def zeros(cls, num_classes: int, device: torch.device) -> EvalCounts:
        # float32 like the logits `add` counts (evaluation casts them), whatever the default
        f32 = {"dtype": torch.float32, "device": device}
        return cls(torch.zeros(num_classes, num_classes, dtype=torch.long, device=device),
                   torch.zeros((), **f32), torch.zeros(CALIBRATION_BINS, 3, **f32))

    @torch.no_grad()
    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Count one batch in place: float logits (B, C), labels (B,)."""
        num_classes = self.confusion.shape[0]
        self.loss_sum += F.cross_entropy(logits, y, reduction="sum")
        conf, pred = logits.softmax(dim=1).max(dim=1)  # (B,), (B,)
        self.confusion.view(-1).index_add_(0, y * num_classes + pred, torch.ones_like(y))
        # nan_to_num: a diverged model must reach the caller's NaN guard, not crash here
        bins = (conf.nan_to_num(0.0) * CALIBRATION_BINS).long().clamp_(0, CALIBRATION_BINS - 1)
        self.calibration.index_add_(0, bins, torch.stack(
            [torch.ones_like(conf), conf, (pred == y).float()], dim=1))


CALIBRATION_BINS = 15  # Guo et al. 2017 use 15 equal-width confidence bins


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
             num_classes: int, logit_scale: float = 1.0,
             on_logits: Callable[[torch.Tensor, torch.Tensor], None] | None = None
             ) -> EvalCounts:
    """Confusion matrix and cross-entropy over `batches`, in eval mode; `on_logits(logits, y)`
    sees each batch's scaled logits too (eval's post-hoc adjustment counts from the same pass).

    The loss is plain cross-entropy whatever the training loss, so curves of all runs compare,
    taken of `logit_scale * logits` (LDAM's s, else 1), the softmax the loss trains.
    """
    was_training = model.training
    model.eval()
    # the batches' device (a parameter-free model, e.g. post-hoc tests' identity, has none)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    counts = EvalCounts.zeros(num_classes, device)
    for x, y in batches:
        if counts.confusion.device != x.device:
            device, counts = x.device, EvalCounts.zeros(num_classes, x.device)
        with autocast_for(device):
            logits = model(x).float()  # (B, C)
        logits = logits * logit_scale
        counts.add(logits, y)
        if on_logits is not None:
            on_logits(logits, y)
    model.train(was_training)
    return counts


def eval_metrics(prefix: str, counts: EvalCounts) -> dict[str, torch.Tensor]:
    """`{prefix_loss, prefix_acc, prefix_acc_class_<i>}` as device tensors (no sync).

    Ratios of counts in float64, as Python computes them: float32's 15/2000 is 0.0074999998,
    shown as 0.7 % where Python's 0.0075 shows as 0.8 % (463 of the 2,001 ratios k/2000 round
    differently), so a number shown would depend on who divided."""
    confusion = counts.confusion.double()
    per_class_total = confusion.sum(dim=1).clamp_min(1)
    total = confusion.sum().clamp_min(1)
    out = {
        f"{prefix}_loss": counts.loss_sum.double() / total,
        f"{prefix}_acc": confusion.diagonal().sum() / total,
    }
    per_class = confusion.diagonal() / per_class_total  # (C,)
    for i in range(confusion.shape[0]):
        out[f"{prefix}_acc_class_{i}"] = per_class[i]
    return out


def to_host(tensors: dict[str, torch.Tensor | float]) -> dict[str, float | list]:
    """Device tensors to Python numbers with a single host sync: 0-dim tensors to floats,
    others to nested lists of their shape."""
    keys = [k for k, v in tensors.items() if isinstance(v, torch.Tensor)]
    out: dict[str, float | list] = {k: float(v) for k, v in tensors.items()
                                    if not isinstance(v, torch.Tensor)}
    if not keys:
        return out
    flat = torch.cat([tensors[k].detach().double().reshape(-1) for k in keys]).cpu()
    for k, part in zip(keys, flat.split([tensors[k].numel() for k in keys])):
        values, shape = part.tolist(), tensors[k].shape
        out[k] = values[0] if not shape else torch.tensor(values).reshape(shape).tolist()
    return out


def iter_skip(batches: Iterable, skip: int) -> Iterator:
    """Drop the first `skip` items now (mid-epoch resume: those steps were already taken;
    their batches are still drawn, so the random streams continue where they stopped), so
    that a clock started after this call times only the steps taken."""
    rest = iter(batches)
    for _ in itertools.islice(rest, skip):
        pass
    return rest
