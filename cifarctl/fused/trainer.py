"""K runs trained as one fused model, each recorded exactly as `cifarctl.training.train` would.

    outcomes = train_fused([cfg_seed0, cfg_seed1, cfg_seed2], trackers=[t0, t1, t2])
    outcomes = launch_fused(cfgs)        # opens one MLflow run per member, then trains

This is `training.train` for a group (read that first; the pieces are shared, not copied):
every member is set up as an unfused run sets itself up (`prepare_data` on one shared device
copy of the dataset, `torch.manual_seed(seed)` then `create_model`, `build_loss`,
`prepare_model`, `build_optimizer`), logs the same params, tags, metrics and artifacts
through its own tracker, selects its own best epoch and writes its own checkpoints in the
ordinary format. Only the step is shared: the members' models are fused
(`cifarctl.fused.models.FusedModel`), their batches stacked (`FusedBatches`), their losses
summed for one backward pass (members share no parameters, so each gets its own gradient),
and one `FusedSGD` step applies each member's learning rate, momentum and weight decay.
Evaluation (validation, test, dead-ReLU probe) runs fused too, split per member.

A member whose loss turns NaN/inf fails alone (FAILED, its last good checkpoint kept, as an
unfused run); the others go on. Ctrl-C / SIGTERM stops every member at the same step with an
exact checkpoint: each resumes with `cifarctl train --resume RUN_ID`, unfused, or all
together with `train_fused(..., resumes=...)`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarctl.config import RunConfig
from cifarctl.engine import EvalCounts, TrainSums, autocast_for, iter_skip, to_host, train_steps
from cifarctl.errors import UsageError
from cifarctl.fused import check_fusable
from cifarctl.fused.data import FusedBatches
from cifarctl.fused.models import FusedModel
from cifarctl.fused.optim import FusedSGD
from cifarctl.names import FUSED_GROUP_TAG, FUSED_MEMBERS_TAG
from cifarctl.progress import NullReporter, Reporter, epoch_line
from cifarctl.tracking import Tracker
from cifarctl.training import (
    LOCAL_RUN_PREFIX,
    LiveStats,
    NonFiniteLoss,
    RunData,
    RunOutcome,
    SharedData,
    StopFlag,
    check_same_data,
    default_run_name,
    describe,
    epoch_metrics,
    fast_layout,
    finish_quietly,
    log_run_end,
    log_run_start,
    loggable,
    loss_params,
    prepare_data,
    resolve_device,
    resume_cli_flags,
    resume_command,
    rng_state,
    run_lr,
    run_splits,
    save_run_state,
    share_data,
    summary_metrics,
    update_best,
)


class FanOut:
    """One `Reporter` that passes the group's progress to each member's reporter."""

    def __init__(self, reporters: list[Reporter]) -> None:
        self.reporters = reporters

    def message(self, text: str) -> None:
        for r in self.reporters:
            r.message(text)

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        for r in self.reporters:
            r.epoch_started(epoch, epochs, steps)

    def step(self, steps_done: int, running: Any) -> None:
        for r in self.reporters:
            r.step(steps_done, running)

    def epoch_ended(self, epoch: int, epochs: int, metrics: Any) -> None:
        for r in self.reporters:
            r.epoch_ended(epoch, epochs, metrics)

    def close(self) -> None:
        for r in self.reporters:
            r.close()


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


@dataclass
class Member:
    """One run of the group: what `train` keeps in local variables, kept per member."""

    cfg: RunConfig
    tracker: Tracker
    data: RunData
    model: nn.Module  # its ordinary model: where its initial weights come from
    optimizer: torch.optim.SGD  # its ordinary optimizer: its settings, its checkpoint format
    loss_fn: nn.Module
    rng: dict[str, Any]  # the global RNG state its unfused run would hold (checkpoints)
    outcome: RunOutcome
    best: dict[str, Any] = field(default_factory=lambda: {"value": None, "epoch": -1,
                                                          "metrics": {}})

    @property
    def active(self) -> bool:
        return self.outcome.status == "RUNNING"

    @property
    def name(self) -> str:
        return self.cfg.run.run_name or default_run_name(self.cfg)


def _setup_member(cfg: RunConfig, tracker: Tracker, shared: Any, device: torch.device,
                  checkpoint_root: Path, resume: dict[str, Any] | None,
                  group_tags: dict[str, str]) -> Member:
    """As `training.train` sets up a run, up to (not including) moving it to the device's
    memory format: data, start-of-run logging (plus `group_tags`), seeded model, loss,
    optimizer."""
    from cifarctl.losses import build_loss
    from cifarctl.models import create_model
    from cifarctl.optim import build_optimizer

    run_id = tracker.run_id or f"{LOCAL_RUN_PREFIX}{uuid.uuid4().hex[:12]}"
    data = prepare_data(cfg, device, shared)
    if resume is not None:
        check_same_data(run_id, resume, data, cfg.data.dataset)
    else:
        log_run_start(cfg, tracker, data, device)
        tracker.set_tags(group_tags)
    torch.manual_seed(cfg.run.seed)  # initialisation exactly as the unfused run's
    model = create_model(cfg.model.name, num_classes=len(data.classes),
                         classifier=cfg.classifier).to(device)
    loss_fn = build_loss(cfg.loss.name, data.train_counts, **loss_params(cfg)).to(device)
    no_decay = loss_fn.prepare_model(model)
    optimizer = build_optimizer(model, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay,
                                nesterov=cfg.optim.nesterov, no_decay=no_decay)
    outcome = RunOutcome(run_id, "RUNNING", 0, [], checkpoint_dir=checkpoint_root / run_id)
    member = Member(cfg, tracker, data, model, optimizer, loss_fn, rng_state(device), outcome)
    if resume is not None:
        model.load_state_dict(resume["model"])
        member.best, member.rng = resume["best"], resume["rng"]
        outcome.history = list(resume["history"])
    return member


def _check_resumes(resumes: list[dict[str, Any]]) -> tuple[int, int]:
    """(epoch, step) every member continues from; they must agree, as they step together."""
    positions = {(int(r["epoch"]), int(r["sums"]["steps_done"]) if r.get("sums") else 0)
                 for r in resumes}
    if len(positions) != 1:
        raise UsageError(f"fused members resume together, but their checkpoints stopped at "
                         f"different (epoch, step): {sorted(positions)}; resume them unfused")
    return positions.pop()


def _member_sums(sums: TrainSums, k: int) -> TrainSums:
    return TrainSums(sums.loss_sum[k], sums.correct[k], sums.seen[k], sums.nonfinite[k],
                     sums.steps_done)


def _stack_sums(states: list[dict[str, Any]], device: torch.device) -> TrainSums:
    parts = [TrainSums.from_state(s, device) for s in states]
    stacked = {name: torch.stack([getattr(p, name) for p in parts])
               for name in ("loss_sum", "correct", "seen", "nonfinite")}
    return TrainSums(**stacked, steps_done=parts[0].steps_done)


def zero_sums(members: int, device: torch.device) -> TrainSums:
    """Empty running sums of an epoch for `members` fused runs: (K,) tensors."""
    zeros = torch.zeros(members, device=device)
    return TrainSums(zeros.clone(), zeros.clone(), zeros.clone(),
                     torch.zeros(members, dtype=torch.bool, device=device))


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


class FusedRun:
    """The group's shared state over its epochs (`train_fused` drives it)."""

    def __init__(self, members: list[Member], device: torch.device, reporter: Reporter,
                 member_reporters: list[Reporter] | None, stop: StopFlag) -> None:
        self.members, self.device, self.reporter, self.stop = members, device, reporter, stop
        self.member_reporters = member_reporters
        self.cfg = members[0].cfg  # what all share: model, data sizes, epochs, batch, device
        self.model = fast_layout(FusedModel([m.model for m in members]).to(device), device)
        self.loss = FusedLoss([m.loss_fn for m in members])
        self.optimizer = FusedSGD(self.model, [(m.model, m.optimizer) for m in members])
        self.step_model = torch.compile(self.model) if self.cfg.run.compile else self.model
        self.train = FusedBatches([m.data.train for m in members])
        first = members[0].data
        self.val = FusedBatches([m.data.val for m in members]) if first.val is not None else None
        self.test = FusedBatches([m.data.test for m in members])
        self.probe = torch.cat([m.data.probe for m in members], dim=1)  # (P, K 3, H, W)
        self.num_classes = len(first.classes)
        self.resume_flags = ""  # `train --resume` flags besides the run id (launch_fused's)

    def resume(self, resumes: list[dict[str, Any]]) -> tuple[int, TrainSums | None]:
        epoch, step = _check_resumes(resumes)  # the weights came with the members' models
        self.optimizer.load_member_state_dicts([r["optimizer"] for r in resumes])
        sums = (_stack_sums([r["sums"] for r in resumes], self.device)
                if resumes[0].get("sums") is not None else None)
        self.reporter.message(f"resuming {len(resumes)} fused runs at epoch {epoch + 1}, "
                              f"step {step}")
        return epoch, sums

    def save(self, k: int, which: str, epoch: int, sums: TrainSums | None) -> None:
        """Member k's checkpoint `which` (last/best), in the unfused format."""
        m = self.members[k]
        save_run_state(m.outcome.checkpoint_dir / f"{which}.pt", m.cfg,
                       model_state=self.model.member_state_dict(k),
                       optimizer_state=self.optimizer.member_state_dict(k), epoch=epoch,
                       best=m.best, history=m.outcome.history,
                       sums=_member_sums(sums, k) if sums is not None else None, rng=m.rng,
                       dataset_fingerprint=m.data.fingerprint)

    def run_epoch(self, epoch: int, sums: TrainSums | None, first: bool = False
                  ) -> tuple[list[dict[str, Any] | None] | None, TrainSums]:
        """Train one epoch (or its rest) and evaluate: per member its metrics, or None if its
        loss became non-finite; `(None, sums)` when interrupted. `first`: this process's
        first epoch (where a compiled model compiles)."""
        k, steps = len(self.members), len(self.train)
        self.loss.set_epoch(epoch)
        sums = sums or zero_sums(k, self.device)
        self.reporter.epoch_started(epoch, self.cfg.optim.epochs, steps)
        t0 = time.perf_counter()
        first_step = sums.steps_done
        live = LiveStats(self.reporter, t0, first_step, k * self.cfg.optim.batch_size,
                         report_compile=first and self.step_model is not self.model)
        lrs = torch.tensor([[run_lr(m.cfg, epoch, s, steps) for m in self.members]
                            for s in range(steps)], dtype=torch.float64,
                           device=self.device)  # (steps, K), exact for the checkpoints
        train_steps(self.step_model, iter_skip(self.train.epoch(epoch), first_step), self.loss,
                    self.optimizer, lr_for_step=lambda s: lrs[s], sums=sums,
                    should_stop=self.stop, on_step=live)
        if sums.steps_done < steps:
            return None, sums
        train_time = time.perf_counter() - t0
        # eager model, as in training._run_epoch: no recompiles for eval mode
        scales = [m.cfg.logit_scale for m in self.members]
        val = (evaluate_fused(self.model, self.val, num_classes=self.num_classes,
                              logit_scales=scales) if self.val is not None else [None] * k)
        test = evaluate_fused(self.model, self.test, num_classes=self.num_classes,
                              logit_scales=scales)
        dead = self.model.dead_relu_fractions(self.probe)  # {layer: (K,)}
        device_metrics = {}
        for i in range(k):
            member = epoch_metrics(_member_sums(sums, i), val[i], test[i],
                                   {layer: frac[i] for layer, frac in dead.items()})
            device_metrics.update({f"{i}/{key}": v for key, v in member.items()})
        host = to_host(device_metrics)  # the epoch's one host sync, for all members
        samples = (steps - first_step) * self.cfg.optim.batch_size
        out: list[dict[str, Any] | None] = []
        for i, m in enumerate(self.members):
            metrics = {key.partition("/")[2]: v for key, v in host.items()
                       if key.startswith(f"{i}/")}
            if metrics.pop("nonfinite"):
                out.append(None)
                continue
            metrics["lr"] = run_lr(m.cfg, epoch, steps - 1, steps)
            metrics["epoch_time_s"] = time.perf_counter() - t0
            metrics["images_per_s"] = samples / max(train_time, 1e-9)  # this member's share
            out.append(metrics)
        return out, sums


def train_fused(cfgs: list[RunConfig], *, trackers: list[Tracker],
                reporter: Reporter | None = None,
                member_reporters: list[Reporter] | None = None,
                checkpoint_root: Path = Path("checkpoints"),
                resumes: list[dict[str, Any]] | None = None, shared: SharedData | None = None,
                resume_flags: str = "") -> list[RunOutcome]:
    """Train `cfgs` as one fused group; log member k through `trackers[k]`.

    Each member's run is tagged `fused_group` (an id the group shares) and `fused_members`
    (K) besides everything `train` logs. Returns one `RunOutcome` per member, in order.
    `reporter` shows the group's progress (epochs, steps, messages) and, without
    `member_reporters`, one epoch line per member;
    with them, member k's epoch results go to `member_reporters[k]` (a sweep's per-trial
    rows) and, without `reporter`, the group's progress to all of them. `resumes` are the
    members' `last` checkpoints (all stopped at the same step), to continue a fused group.
    `shared` and `resume_flags` as `training.train`'s `data` and `resume_flags`.
    """
    check_fusable(cfgs)
    if any(n is not None and n != len(cfgs) for n in
           (len(trackers), len(resumes) if resumes else None,
            len(member_reporters) if member_reporters else None)):
        raise ValueError("one tracker (and resume state, member reporter, if any) per config")
    reporter = reporter or (FanOut(member_reporters) if member_reporters else NullReporter())
    stop = StopFlag()
    with stop.installed():  # from the start, as in `training.train`: a signal while the data
        # loads still ends every member KILLED, with a checkpoint
        return _train_group(cfgs, trackers, reporter, member_reporters, checkpoint_root,
                            resumes, stop, shared, resume_flags)


def _train_group(cfgs: list[RunConfig], trackers: list[Tracker], reporter: Reporter,
                 member_reporters: list[Reporter] | None, checkpoint_root: Path,
                 resumes: list[dict[str, Any]] | None, stop: StopFlag,
                 shared: SharedData | None, resume_flags: str) -> list[RunOutcome]:
    members: list[Member] = []
    group_tags = {FUSED_GROUP_TAG: uuid.uuid4().hex[:12], FUSED_MEMBERS_TAG: str(len(cfgs))}
    try:  # from the first line: whatever fails, every member's run is closed
        device = resolve_device(cfgs[0].run.device)
        shared = shared or share_data(cfgs[0].data.dataset, device)
        for i, cfg in enumerate(cfgs):
            members.append(_setup_member(cfg, trackers[i], shared, device, checkpoint_root,
                                         resumes[i] if resumes else None, group_tags))
        run = FusedRun(members, device, reporter, member_reporters, stop)
        run.resume_flags = resume_flags
        start_epoch, sums = run.resume(resumes) if resumes else (0, None)
        _train_epochs(run, start_epoch, sums)
        for m in members:
            if m.outcome.status != "FAILED":
                m.outcome.epochs_done = len(m.outcome.history)
                m.outcome.summary = summary_metrics(m.best, m.data)
                log_run_end(m.cfg, m.tracker, m.outcome, m.best, m.data,
                            m.outcome.checkpoint_dir)
                m.tracker.finish(m.outcome.status)
        return [m.outcome for m in members]
    except BaseException:
        status = "KILLED" if stop.requested else "FAILED"
        for i, tracker in enumerate(trackers):
            if i >= len(members) or members[i].outcome.status != "FAILED":  # else finished
                finish_quietly(tracker, status, checkpoint_root / str(tracker.run_id))
        raise
    finally:
        reporter.close()


def _train_epochs(run: FusedRun, start_epoch: int, sums: TrainSums | None) -> None:
    """The epoch loop of `training.train`, once per member where `train` has one run."""
    epochs = run.cfg.optim.epochs
    for epoch in range(start_epoch, epochs):
        results, sums = run.run_epoch(epoch, sums, first=epoch == start_epoch)
        if results is None:  # interrupted mid-epoch: every member keeps its exact position
            for k, m in enumerate(run.members):
                if m.active:
                    run.save(k, "last", epoch, sums)
                    m.outcome.status = "KILLED"
                    m.outcome.message = (f"interrupted by {run.stop.signal_name} in epoch "
                                         f"{epoch + 1}; resume with `"
                                         f"{resume_command(m.outcome.run_id, run.resume_flags)}`")
            return
        sums = None
        for k, (m, metrics) in enumerate(zip(run.members, results)):
            if not m.active:
                continue  # failed earlier: its slice of the fused model is not read again
            if metrics is None:
                m.outcome.status, m.outcome.message = "FAILED", str(NonFiniteLoss(epoch))
                m.outcome.epochs_done = len(m.outcome.history)
                finish_quietly(m.tracker, "FAILED", m.outcome.checkpoint_dir)
                run.reporter.message(f"{m.name}: {m.outcome.message}")
                continue
            m.outcome.history.append(metrics)
            m.best = update_best(m.cfg, m.best, epoch, metrics, m.data)
            if m.best["epoch"] == epoch:
                run.save(k, "best", epoch + 1, None)
            run.save(k, "last", epoch + 1, None)
            m.tracker.log_metrics(loggable(metrics), step=epoch)
            if run.member_reporters:
                run.member_reporters[k].epoch_ended(epoch, epochs, metrics)
            else:
                run.reporter.message(f"{m.name}  {epoch_line(epoch, epochs, metrics)}")
            m.outcome.epochs_done = epoch + 1
        if not any(m.active for m in run.members):
            return
    for m in run.members:
        if m.active:
            m.outcome.status = "FINISHED"


def launch_fused(cfgs: list[RunConfig], *, track: bool = True, tracking_uri: str | None = None,
                 parent_run_id: str | None = None, extra_tags: dict[str, str] | None = None,
                 checkpoint_root: Path = Path("checkpoints"), quiet: bool = False,
                 reporter: Reporter | None = None) -> list[RunOutcome]:
    """`training.launch` for a fused group: check, open one tracked run per member, train."""
    from cifarctl.progress import make_reporter
    from cifarctl.tracking import check_reachable, open_tracker, resolve_tracking_uri

    check_fusable(cfgs)
    if track:
        check_reachable(resolve_tracking_uri(tracking_uri))
    # device and data checked before any run exists, as `training.launch` does
    shared = share_data(cfgs[0].data.dataset, resolve_device(cfgs[0].run.device))
    for cfg in cfgs:
        run_splits(cfg, shared.dataset)
    trackers: list[Tracker] = []
    try:
        for cfg in cfgs:
            trackers.append(open_tracker(track, experiment=cfg.run.experiment,
                                         tracking_uri=tracking_uri,
                                         run_name=cfg.run.run_name or default_run_name(cfg),
                                         parent_run_id=parent_run_id, tags=extra_tags,
                                         description=describe(cfg)))
    except BaseException:
        for tracker in trackers:
            tracker.finish("FAILED")
        raise
    flags = resume_cli_flags(track=track, tracking_uri=tracking_uri,
                             checkpoint_root=checkpoint_root)
    return train_fused(cfgs, trackers=trackers, reporter=reporter or make_reporter(quiet=quiet),
                       checkpoint_root=checkpoint_root, shared=shared, resume_flags=flags)
