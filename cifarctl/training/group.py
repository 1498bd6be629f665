"""What the training loop steps: one run's own model, or K runs fused into one (issue 8).

    members = [build_member(record, data, device, resume) for ...]
    group = Group(members, device)
    metrics, sums = group.run_epoch(epoch, sums, stop, reporter)  # each: metrics or NonFiniteLoss

Every member is set up exactly as a run of its own, so a member of a fused group ends where
it would have ended alone. A group of one trains that model, loss and optimizer directly; a
group of K stacks them (`cifarctl.fused`): one `FusedModel`, their losses summed for one
backward pass, one `FusedSGD` step with each member's own hyper-parameters.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cifarctl import losses
from cifarctl.checkpoint import RunState
from cifarctl.config import RunConfig
from cifarctl.engine import (
    EvalCounts,
    TrainSums,
    eval_metrics,
    evaluate,
    iter_skip,
    to_host,
    train_steps,
)
from cifarctl.errors import CifarctlError, UsageError
from cifarctl.fused.data import FusedBatches
from cifarctl.fused.engine import FusedLoss, evaluate_fused, member_sums, stack_sums
from cifarctl.fused.models import FusedModel
from cifarctl.fused.optim import FusedSGD
from cifarctl.models import create_model, dead_relu_fractions
from cifarctl.optim import build_optimizer
from cifarctl.progress import Reporter
from cifarctl.sam import Sam
from cifarctl.schedule import cosine_lr_at, lr_at
from cifarctl.training.data import RunData
from cifarctl.training.device import fast_layout, rng_state, set_rng_state
from cifarctl.training.live import LiveStats
from cifarctl.training.record import RunRecord, Weights
from cifarctl.training.stages import constrain_classifier, start_stage


@dataclass
class Member:
    """One run of a group: its record, data, and its own (unfused) model, loss, optimizer."""

    record: RunRecord
    data: RunData
    model: nn.Module  # its ordinary model: where its initial (or resumed) weights live
    optimizer: torch.optim.SGD  # its ordinary optimizer: its settings, its checkpoint format
    loss_fn: nn.Module
    rng: dict[str, Any]  # the global RNG state its run holds after set-up (checkpoints)

    @property
    def cfg(self) -> RunConfig:
        return self.record.cfg


def build_member(record: RunRecord, data: RunData, device: torch.device,
                 resume: RunState | None) -> Member:
    """A run's seeded model, loss and optimizer, with its resumed weights if any."""
    cfg = record.cfg
    torch.manual_seed(cfg.run.seed)  # initialisation and dropout; the data RNG is separate
    model = create_model(cfg.model.name, num_classes=len(data.classes),
                         classifier=cfg.classifier).to(device)
    loss_fn = losses.loss_from_config(cfg.loss, data.train_counts).to(device)
    no_decay = loss_fn.prepare_model(model)
    start_stage(model, cfg, record.checkpoint_root)  # two-stage runs (issue 18)
    optimizer = build_optimizer(model, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay,
                                nesterov=cfg.optim.nesterov, no_decay=no_decay)
    constrain_classifier(model, optimizer, cfg.optim.max_norm)
    rng = rng_state(device)
    if resume is not None:
        model.load_state_dict(resume.model)
        rng = resume.rng
    return Member(record, data, model, optimizer, loss_fn, rng)


def run_lr(cfg: RunConfig, epoch: int, step: int, steps: int) -> float:
    """The learning rate of `step` of `epoch` under `cfg`'s schedule, `steps` steps an epoch."""
    if cfg.optim.schedule == "cosine":
        return cosine_lr_at(epoch, step, steps_per_epoch=steps, base_lr=cfg.optim.lr,
                            warmup=cfg.optim.warmup, epochs=cfg.optim.epochs,
                            min_lr=cfg.optim.min_lr)
    return lr_at(epoch, step, steps_per_epoch=steps, base_lr=cfg.optim.lr,
                 warmup=cfg.optim.warmup, milestones=cfg.optim.steps,
                 factors=cfg.optim.decay_factors)


class NonFiniteLoss(CifarctlError):
    """A run diverged in `epoch` (0-based): its training loss, or the evaluation loss at the
    epoch's end (weights already NaN/inf after a step whose loss was still finite), became
    NaN or infinite. The checkpoint of the epoch before is the last good one."""

    def __init__(self, epoch: int, *, in_evaluation: bool = False) -> None:
        what, first = (("evaluation loss (the weights)", "no epoch came before it")
                       if in_evaluation else ("training loss", "no epoch finished"))
        kept = (f"the last good checkpoint (after epoch {epoch}) is kept" if epoch
                else f"{first}, so there is no checkpoint to keep")
        super().__init__(f"{what} became NaN/inf in epoch {epoch + 1}; {kept}; lower "
                         f"optim.lr or check the loss settings")


def epoch_metrics(sums: TrainSums, val: EvalCounts | None, test: EvalCounts,
                  dead_relu: dict[str, torch.Tensor]) -> dict[str, Any]:
    """An epoch's metrics (names of ARCHITECTURE.md) as device tensors, plus `nonfinite`,
    `eval_nonfinite` and `test_confusion`, for `to_host`."""
    out: dict[str, Any] = {"train_loss": sums.loss_sum / sums.seen,
                           "train_acc": sums.correct / sums.seen, "nonfinite": sums.nonfinite}
    if val is not None:
        out.update(eval_metrics("val", val))
    out.update(eval_metrics("test", test))
    # a finite training loss can leave NaN/inf weights (the epoch's last step), which every
    # evaluation then shows; such an epoch is no good checkpoint
    out["eval_nonfinite"] = ~torch.isfinite(
        out["test_loss"] + (out["val_loss"] if val is not None else 0))
    out["test_confusion"] = test.confusion
    out.update({f"dead_relu_{layer}": frac for layer, frac in dead_relu.items()})
    return out


class Group:
    """K >= 1 members that take their steps together."""

    def __init__(self, members: Sequence[Member], device: torch.device) -> None:
        self.members, self.device, self.k = list(members), device, len(members)
        self.cfg = members[0].cfg  # what all share: model, data sizes, epochs, batch, device
        self.num_classes = len(members[0].data.classes)
        if self.k == 1:
            m = members[0]
            self.model: nn.Module = fast_layout(m.model, device)
            self.loss, self.optimizer = m.loss_fn, m.optimizer
        else:
            self.model = fast_layout(FusedModel([m.model for m in members]).to(device), device)
            self.loss = FusedLoss([m.loss_fn for m in members])
            self.optimizer = FusedSGD(self.model, [(m.model, m.optimizer) for m in members])

        def joined(loaders: list[Any]) -> Any:  # one run's loader, or K runs' in lockstep
            return loaders[0] if self.k == 1 else FusedBatches(loaders)

        self.train = joined([m.data.train for m in members])
        self._val = (joined([m.data.val for m in members])
                     if members[0].data.val is not None else None)
        self._test = joined([m.data.test for m in members])
        self._probe = torch.cat([m.data.probe for m in members], dim=1)  # (P, K 3, H, W)
        self.step_model = torch.compile(self.model) if self.cfg.run.compile else self.model
        rhos = [m.cfg.optim.sam_rho for m in members]  # SAM when any member uses it
        self.sam = Sam(self.model, rhos) if any(rhos) else None

    def resume(self, states: Sequence[RunState]) -> tuple[int, TrainSums | None]:
        """Load the optimizers (the weights came with the members) and, for one run, the
        global RNG; the (epoch, partial sums) every member continues from."""
        positions = {(s.epoch, s.steps_done) for s in states}
        if len(positions) != 1:  # they step together
            raise UsageError(f"fused members resume together, but their checkpoints stopped "
                             f"at different (epoch, step): {sorted(positions)}; resume them "
                             f"unfused")
        if self.k == 1:
            # a copy: SGD keeps the given momentum tensors and updates them in place
            self.optimizer.load_state_dict(copy.deepcopy(states[0].optimizer))
            set_rng_state(states[0].rng, self.device)
        else:
            self.optimizer.load_member_state_dicts([s.optimizer for s in states])
        epoch, sums = states[0].epoch, [s.sums for s in states]
        if sums[0] is None:
            return epoch, None
        if self.k == 1:
            return epoch, TrainSums.from_state(sums[0], self.device)
        return epoch, stack_sums(sums, self.device)

    def weights(self, k: int) -> Weights:
        """Member k's checkpoint content, in the unfused format."""
        if self.k == 1:
            # the live global RNG state: a model with dropout (never fused) draws from it
            return Weights(self.model.state_dict(), self.optimizer.state_dict(),
                           rng_state(self.device))
        return Weights(self.model.member_state_dict(k), self.optimizer.member_state_dict(k),
                       self.members[k].rng)

    def member_sums(self, sums: TrainSums, k: int) -> TrainSums:
        return sums if self.k == 1 else member_sums(sums, k)

    def _lr_for_step(self, epoch: int, steps: int) -> Callable[[int], Any]:
        if self.k == 1:
            return lambda step: run_lr(self.cfg, epoch, step, steps)
        lrs = torch.tensor([[run_lr(m.cfg, epoch, s, steps) for m in self.members]
                            for s in range(steps)], dtype=torch.float64,
                           device=self.device)  # (steps, K), exact for the checkpoints
        return lambda step: lrs[step]

    def _evaluate(self) -> tuple[list[EvalCounts | None], list[EvalCounts],
                                 list[dict[str, torch.Tensor]]]:
        """Validation and test counts and dead-ReLU fractions, per member. The eager model:
        a compiled graph would recompile for eval mode and the last, smaller batch."""
        scales = [m.cfg.logit_scale for m in self.members]

        def counts(batches: Any) -> list[EvalCounts]:
            if self.k == 1:
                return [evaluate(self.model, batches.epoch(0), num_classes=self.num_classes,
                                 logit_scale=scales[0])]
            return evaluate_fused(self.model, batches, num_classes=self.num_classes,
                                  logit_scales=scales)

        vals = counts(self._val) if self._val is not None else [None] * self.k
        tests = counts(self._test)
        if self.k == 1:
            return vals, tests, [dead_relu_fractions(self.model, self._probe)]
        dead = self.model.dead_relu_fractions(self._probe)  # {layer: (K,)}
        return vals, tests, [{layer: f[i] for layer, f in dead.items()} for i in range(self.k)]

    def run_epoch(self, epoch: int, sums: TrainSums | None, should_stop: Callable[[], bool],
                  reporter: Reporter, first: bool = False
                  ) -> tuple[list[dict[str, Any] | NonFiniteLoss] | None, TrainSums]:
        """Train one epoch (or its rest) and evaluate: per member its metrics, or a
        `NonFiniteLoss` if it diverged; `(None, sums)` when interrupted. `first`: this process's
        first epoch (where a compiled model compiles)."""
        steps = len(self.train)
        self.loss.set_epoch(epoch)
        sums = sums or TrainSums.zeros(self.device, None if self.k == 1 else self.k)
        reporter.epoch_started(epoch, self.cfg.optim.epochs, steps)
        first_step = sums.steps_done
        batches = iter_skip(self.train.epoch(epoch), first_step)  # before the clock starts
        t0 = time.perf_counter()
        live = LiveStats(reporter, t0, first_step, self.k * self.cfg.optim.batch_size,
                         report_compile=first and self.step_model is not self.model)
        train_steps(self.step_model, batches, self.loss, self.optimizer,
                    lr_for_step=self._lr_for_step(epoch, steps), sums=sums,
                    should_stop=should_stop, on_step=live, sam=self.sam)
        if sums.steps_done < steps:
            return None, sums
        train_time = time.perf_counter() - t0
        vals, tests, dead = self._evaluate()
        on_device = {}
        for i in range(self.k):
            member = epoch_metrics(self.member_sums(sums, i), vals[i], tests[i], dead[i])
            on_device.update({f"{i}/{key}": v for key, v in member.items()})
        host = to_host(on_device)  # the epoch's one host sync, for all members
        samples = (steps - first_step) * self.cfg.optim.batch_size
        out: list[dict[str, Any] | NonFiniteLoss] = []
        for i, m in enumerate(self.members):
            metrics = {key.partition("/")[2]: v for key, v in host.items()
                       if key.startswith(f"{i}/")}
            train_nonfinite, eval_nonfinite = metrics.pop("nonfinite"), metrics.pop(
                "eval_nonfinite")
            if train_nonfinite or eval_nonfinite:
                out.append(NonFiniteLoss(epoch, in_evaluation=not train_nonfinite))
                continue
            metrics["lr"] = run_lr(m.cfg, epoch, steps - 1, steps)
            metrics["epoch_time_s"] = time.perf_counter() - t0
            metrics["images_per_s"] = samples / max(train_time, 1e-9)  # this member's share
            out.append(metrics)
        return out, sums
