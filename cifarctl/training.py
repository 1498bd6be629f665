"""One training run, end to end: data, model, loss, loop, checkpoints, signals, tracking.

    outcome = train(load_config("experiments/resnet32-ce.yaml"), tracker=NullTracker())

`train` owns the order of things; the numbers come from `engine`, the pictures from `plots`,
and everything leaves through the `Tracker` and `Reporter` it is given. A run can stop three
ways besides finishing: Ctrl-C / SIGTERM (checkpoint at the current step, status KILLED,
resumable exactly), a non-finite loss (status FAILED, the last good checkpoint kept), or an
error (status FAILED). Resuming (`resume=`) continues from the saved step with the same
batches, augmentation and RNG state, so an interrupted run ends where an uninterrupted one
would (issue 4).
"""

from __future__ import annotations

import copy
import json
import signal
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cifarctl import __version__
from cifarctl.checkpoint import load_checkpoint, save_checkpoint
from cifarctl.config import RunConfig, apply_overrides, config_from_dict
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
from cifarctl.names import (
    BEST_EPOCH,
    BEST_VAL_ACC,
    CLASS_ACC_AT_BEST,
    LOCAL_RUN_PREFIX,
    SWEEP_KEY_TAG,
    TEST_ACC_AT_BEST,
    TEST_LOSS_AT_BEST,
    TRAINER_TAG,
    default_run_name,
    describe,
)
from cifarctl.progress import NullReporter, Reporter
from cifarctl.schedule import lr_at
from cifarctl.tracking import RUN_STATUSES, Tracker
from cifarctl.tracking.owner import alive_owner, owner

EVAL_BATCH = 1024  # evaluation has no gradients: bigger batches, fewer launches
PROBE_SIZE = 256  # images in the fixed dead-ReLU probe batch (SPEC 1.1)
LIVE_EVERY = 20  # steps between live-stat refreshes of the progress bar


class NonFiniteLoss(CifarctlError):
    """The training loss became NaN or infinite in `epoch` (0-based)."""

    def __init__(self, epoch: int) -> None:
        kept = (f"the last good checkpoint (after epoch {epoch}) is kept" if epoch
                else "no epoch finished, so there is no checkpoint to keep")
        super().__init__(f"training loss became NaN/inf in epoch {epoch + 1}; {kept}; lower "
                         f"optim.lr or check the loss settings")


@dataclass
class RunOutcome:
    """What a run ended with: plain values for the CLI, sweeps and tests."""

    run_id: str
    status: str  # FINISHED | FAILED | KILLED
    epochs_done: int
    history: list[dict[str, float]]
    summary: dict[str, float] = field(default_factory=dict)
    checkpoint_dir: Path | None = None
    message: str = ""


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when there is one), `cpu`, `cuda` or `cuda:N`; UsageError for anything
    else, and for a CUDA device this machine does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"device {name!r} is not supported: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"run.device={name} but no CUDA device is available; use "
                             f"--device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"run.device={name} but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def fast_layout(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model in channels_last, the layout cuDNN's and oneDNN's convolutions run fastest
    in (and cuDNN autotuning on CUDA). On the project's 2-core AVX2 CPU a resnet32 step at
    batch 128 takes 0.70-0.75 s instead of 0.78-0.88 s (issue 8, BENCHMARKS.md)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return model.to(memory_format=torch.channels_last)


# ---- the data a run trains and evaluates on -------------------------------------------------

@dataclass
class RunData:
    name: str
    classes: tuple[str, ...]
    fingerprint: str
    train_counts: list[int]
    train: Any  # DeviceLoader
    val: Any | None
    test: Any
    probe: torch.Tensor  # (PROBE_SIZE, 3, 32, 32) normalised, un-augmented training images


@dataclass
class SharedData:
    """A dataset's images on the device once; each run's splits are index views of it, so
    the runs of a fused group (issue 8) share one copy."""

    dataset: Any  # CifarData
    every_train: Any  # DeviceLoader over every training image, validation rows included
    test: Any  # DeviceLoader over the test set


def share_data(spec: str, device: torch.device) -> SharedData:
    from cifarctl.data import load_dataset
    from cifarctl.data.loader import DeviceLoader

    data = load_dataset(spec)

    def plain(images, labels) -> Any:
        return DeviceLoader(images, labels, batch_size=EVAL_BATCH, shuffle=False,
                            augment=False, drop_last=False, seed=0, device=device)

    return SharedData(data, plain(data.train_images, data.train_labels),
                      plain(data.test_images, data.test_labels))


def run_splits(cfg: RunConfig, data: Any) -> Any:
    """`cfg.data`'s train/validation split of `data` (a CifarData), refused with a UsageError
    when it cannot train: a class left without images, or fewer images than one batch.

    Cheap (index arithmetic on the labels), so `launch` and `sweep` check every config with
    it before an MLflow run exists: bad data settings leave no empty FAILED runs behind.
    """
    from cifarctl.data.longtail import make_splits

    splits = make_splits(data.train_labels, profile=cfg.data.imbalance_type,
                         ratio=cfg.data.imbalance, val_per_class=cfg.data.val_per_class,
                         seed=cfg.run.seed, num_classes=len(data.classes))
    counts = list(splits.train_counts)
    if min(counts) == 0:
        raise UsageError(f"data.imbalance={cfg.data.imbalance:g} leaves class "
                         f"{counts.index(0)} without training images (counts {counts}); "
                         f"lower data.imbalance")
    if sum(counts) < cfg.optim.batch_size:
        raise UsageError(f"optim.batch_size={cfg.optim.batch_size} is larger than the "
                         f"{sum(counts)} training images; lower it")
    return splits


def prepare_data(cfg: RunConfig, device: torch.device, shared: SharedData | None = None
                 ) -> RunData:
    """The run's splits of `cfg.data` (from `shared`, when given, without another copy)."""
    from cifarctl.data.loader import normalize

    shared = shared or share_data(cfg.data.dataset, device)
    data, every = shared.dataset, shared.every_train
    splits = run_splits(cfg, data)
    # drop_last keeps every step's shape static (torch.compile, cudnn.benchmark).
    train = every.subset(splits.train_idx, batch_size=cfg.optim.batch_size, shuffle=True,
                         augment=cfg.data.augment, drop_last=True, seed=cfg.run.seed)
    val = (every.subset(splits.val_idx, batch_size=EVAL_BATCH, shuffle=False, augment=False,
                        drop_last=False, seed=0) if len(splits.val_idx) else None)
    probe_idx = torch.randperm(len(splits.train_idx),
                               generator=torch.Generator().manual_seed(cfg.run.seed))[:PROBE_SIZE]
    probe = normalize(every.images[train.rows[probe_idx.to(device)]])
    return RunData(data.name, tuple(data.classes), data.fingerprint, list(splits.train_counts),
                   train, val, shared.test, probe)


# ---- interruption -----------------------------------------------------------------------

class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between steps (a second Ctrl-C aborts)."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals only reach the main thread; workers are stopped by it
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


# ---- the run ----------------------------------------------------------------------------

def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def checkpoint_path(root: Path, run_id: str, which: str = "last") -> Path:
    return root / run_id / f"{which}.pt"


def find_resume_checkpoint(root: Path, run_id: str, tracker: Tracker | None = None
                           ) -> dict[str, Any]:
    """The `last` checkpoint of `run_id`: local first, else downloaded from the run."""
    path = checkpoint_path(root, run_id)
    if not path.is_file() and tracker is not None:
        downloaded = tracker.download_artifact("checkpoints/last.pt", path.parent)
        path = Path(downloaded) if downloaded else path
    if not path.is_file():
        raise UsageError(f"no checkpoint to resume run {run_id} (looked for {path}); "
                         f"was it trained in another directory?")
    return load_checkpoint(path)


def train(cfg: RunConfig, *, tracker: Tracker, reporter: Reporter | None = None,
          checkpoint_root: Path = Path("checkpoints"),
          resume: dict[str, Any] | None = None, data: RunData | None = None,
          resume_flags: str = "") -> RunOutcome:
    """Train `cfg` to the end (or to an interruption); log everything through `tracker`.

    `data`: `prepare_data(cfg, ...)` when the caller has it already (`launch` checks the data
    before it opens the run); `resume_flags`: what `cifarctl train --resume RUN_ID` needs
    besides the id to find this run again (`--tracking-uri ...`), for the advice on Ctrl-C.
    """
    stop = StopFlag()
    # From here on Ctrl-C / SIGTERM only set the flag, even while the data loads: the loop
    # sees it before its first step and the run ends KILLED with a checkpoint to resume
    # (not RUNNING forever, or FAILED). A second Ctrl-C aborts at once.
    with stop.installed():
        return _train(cfg, tracker, reporter or NullReporter(), checkpoint_root, resume, stop,
                      data, resume_flags)


def _train(cfg: RunConfig, tracker: Tracker, reporter: Reporter, checkpoint_root: Path,
           resume: dict[str, Any] | None, stop: StopFlag, data: RunData | None,
           resume_flags: str) -> RunOutcome:
    from cifarctl.losses import build_loss
    from cifarctl.models import create_model, dead_relu_fractions
    from cifarctl.optim import build_optimizer

    run_id = tracker.run_id or f"{LOCAL_RUN_PREFIX}{uuid.uuid4().hex[:12]}"
    ckpt_dir = checkpoint_root / run_id
    outcome = RunOutcome(run_id, "RUNNING", 0, [], checkpoint_dir=ckpt_dir)
    try:  # from the first line: whatever fails, the run is closed, never left RUNNING
        device = resolve_device(cfg.run.device)
        data = data or prepare_data(cfg, device)
        if resume is not None:
            check_same_data(run_id, resume, data, cfg.data.dataset)
            tracker.set_tags({TRAINER_TAG: owner()})  # this process trains it now
        else:
            log_run_start(cfg, tracker, data, device)
        torch.manual_seed(cfg.run.seed)  # initialisation and dropout; data RNG is separate
        model = create_model(cfg.model.name, num_classes=len(data.classes),
                             classifier=cfg.classifier).to(device)
        loss_fn = build_loss(cfg.loss.name, data.train_counts, **loss_params(cfg)).to(device)
        no_decay = loss_fn.prepare_model(model)
        model = fast_layout(model, device)
        optimizer = build_optimizer(model, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                    weight_decay=cfg.optim.weight_decay,
                                    nesterov=cfg.optim.nesterov, no_decay=no_decay)
        start_epoch, sums, best = 0, None, {"value": None, "epoch": -1, "metrics": {}}
        if resume is not None:
            model.load_state_dict(resume["model"])
            # a copy: SGD keeps the given momentum tensors and updates them in place
            optimizer.load_state_dict(copy.deepcopy(resume["optimizer"]))
            start_epoch, best = int(resume["epoch"]), resume["best"]
            outcome.history = list(resume["history"])
            if resume.get("sums") is not None:
                sums = TrainSums.from_state(resume["sums"], device)
            _set_rng_state(resume["rng"], device)
            reporter.message(f"resuming run {run_id} at epoch {start_epoch + 1}, "
                             f"step {sums.steps_done if sums else 0}")
        step_model = torch.compile(model) if cfg.run.compile else model

        def save(path: Path, epoch: int, sums: TrainSums | None) -> None:
            save_run_state(path, cfg, model_state=model.state_dict(),
                           optimizer_state=optimizer.state_dict(), epoch=epoch, best=best,
                           history=outcome.history, sums=sums, rng=rng_state(device),
                           dataset_fingerprint=data.fingerprint)

        for epoch in range(start_epoch, cfg.optim.epochs):
            metrics, sums = _run_epoch(cfg, epoch, step_model, model, loss_fn, optimizer,
                                       data, sums, stop, reporter, dead_relu_fractions,
                                       first=epoch == start_epoch)
            if metrics is None:  # interrupted mid-epoch: keep the exact position
                save(ckpt_dir / "last.pt", epoch, sums)
                outcome.status = "KILLED"
                outcome.message = (f"interrupted by {stop.signal_name} in epoch "
                                   f"{epoch + 1}; resume with "
                                   f"`{resume_command(run_id, resume_flags)}`")
                break
            sums = None
            outcome.history.append(metrics)
            best = update_best(cfg, best, epoch, metrics, data)
            if best["epoch"] == epoch:
                save(ckpt_dir / "best.pt", epoch + 1, None)
            save(ckpt_dir / "last.pt", epoch + 1, None)
            tracker.log_metrics(loggable(metrics), step=epoch)
            reporter.epoch_ended(epoch, cfg.optim.epochs, metrics)
            outcome.epochs_done = epoch + 1
        else:
            outcome.status = "FINISHED"
        outcome.epochs_done = len(outcome.history)
        outcome.summary = summary_metrics(best, data)
        log_run_end(cfg, tracker, outcome, best, data, ckpt_dir)
        tracker.finish(outcome.status)
        return outcome
    except NonFiniteLoss as err:
        outcome.status, outcome.message = "FAILED", str(err)
        finish_quietly(tracker, "FAILED", ckpt_dir)
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, without a mid-epoch checkpoint
        finish_quietly(tracker, "KILLED", ckpt_dir)
        outcome.status, outcome.epochs_done = "KILLED", len(outcome.history)
        outcome.message = f"interrupted twice: stopped at once in epoch {outcome.epochs_done + 1}"
        if (ckpt_dir / "last.pt").is_file():
            outcome.message += (f"; resume from its last checkpoint with "
                                f"`{resume_command(run_id, resume_flags)}`")
        else:
            outcome.message += "; it saved no checkpoint yet: train it again"
        return outcome
    except BaseException:
        finish_quietly(tracker, "KILLED" if stop.requested else "FAILED", ckpt_dir)
        raise
    finally:
        reporter.close()


def loss_params(cfg: RunConfig) -> dict[str, Any]:
    lo = cfg.loss
    params: dict[str, Any] = {"beta": lo.beta, "gamma": lo.gamma, "drw_epoch": lo.drw_epoch}
    if lo.name == "hybrid":
        params["alpha"] = lo.alpha
    if lo.name == "ldam":
        params.update(max_m=lo.max_m, s=lo.s)
    return params


def _run_epoch(cfg, epoch, step_model, model, loss_fn, optimizer, data, sums, stop, reporter,
               dead_relu_fractions, first=False):
    """Train one epoch (or its rest), then evaluate; `(None, sums)` when interrupted."""
    steps = len(data.train)
    loss_fn.set_epoch(epoch)
    sums = sums or TrainSums.zeros(data.probe.device)
    reporter.epoch_started(epoch, cfg.optim.epochs, steps)
    t0 = time.perf_counter()
    first_step = sums.steps_done
    live = LiveStats(reporter, t0, first_step, cfg.optim.batch_size,
                     # compilation happens in this process's first compiled step only
                     report_compile=first and step_model is not model)

    def lr_for_step(step: int) -> float:
        return run_lr(cfg, epoch, step, steps)

    train_steps(step_model, iter_skip(data.train.epoch(epoch), first_step), loss_fn, optimizer,
                lr_for_step=lr_for_step, sums=sums, should_stop=stop, on_step=live)
    if sums.steps_done < steps:
        return None, sums
    train_time = time.perf_counter() - t0
    # Evaluation runs the eager model: a compiled graph would recompile for eval mode and
    # for the last, smaller batch, for little gain on a pass without gradients.
    classes = len(data.classes)
    scale = cfg.logit_scale
    val = (evaluate(model, data.val.epoch(0), num_classes=classes, logit_scale=scale)
           if data.val is not None else None)
    test = evaluate(model, data.test.epoch(0), num_classes=classes, logit_scale=scale)
    host = to_host(epoch_metrics(sums, val, test, dead_relu_fractions(model, data.probe)))
    if host.pop("nonfinite"):  # ^ the epoch's one host sync
        raise NonFiniteLoss(epoch)
    samples = (steps - first_step) * cfg.optim.batch_size
    host["lr"] = lr_for_step(steps - 1)
    host["epoch_time_s"] = time.perf_counter() - t0
    host["images_per_s"] = samples / max(train_time, 1e-9)
    return host, sums


def run_lr(cfg: RunConfig, epoch: int, step: int, steps: int) -> float:
    """The learning rate of `step` of `epoch` under `cfg`'s schedule, `steps` steps an epoch."""
    return lr_at(epoch, step, steps_per_epoch=steps, base_lr=cfg.optim.lr,
                 warmup=cfg.optim.warmup, milestones=cfg.optim.steps,
                 factors=cfg.lr_decay_factors)


def epoch_metrics(sums: TrainSums, val: EvalCounts | None, test: EvalCounts,
                  dead_relu: dict[str, torch.Tensor]) -> dict[str, Any]:
    """An epoch's metrics (names of ARCHITECTURE.md) as device tensors, plus `nonfinite` and
    `test_confusion`, for `to_host`."""
    out: dict[str, Any] = {"train_loss": sums.loss_sum / sums.seen,
                           "train_acc": sums.correct / sums.seen, "nonfinite": sums.nonfinite}
    if val is not None:
        out.update(eval_metrics("val", val))
    out.update(eval_metrics("test", test))
    out["test_confusion"] = test.confusion
    out.update({f"dead_relu_{layer}": frac for layer, frac in dead_relu.items()})
    return out


class LiveStats:
    """Feeds the progress bar running loss/accuracy without stalling the device.

    Every LIVE_EVERY steps it starts a non-blocking copy of the running sums to the host and
    shows the copy started the time before, which has long arrived: no `.item()` in the step.
    """

    def __init__(self, reporter: Reporter, t0: float, first_step: int, batch: int,
                 report_compile: bool = False) -> None:
        # batch: images per step, over all members of a fused group
        self.reporter, self.t0, self.first_step, self.batch = reporter, t0, first_step, batch
        self.pending: torch.Tensor | None = None
        self.report_compile = report_compile

    def __call__(self, sums: TrainSums) -> None:
        if self.report_compile:  # the first compiled step includes compilation: time it once
            self.report_compile = False
            if sums.loss_sum.device.type == "cuda":
                torch.cuda.synchronize()
            self.reporter.message(f"torch.compile: first step took "
                                  f"{time.perf_counter() - self.t0:.1f}s (compilation)")
        if sums.steps_done % LIVE_EVERY:
            self.reporter.step(sums.steps_done, None)
            return
        running = None
        if self.pending is not None:
            loss_sum, correct, seen = self.pending.tolist()
            elapsed = time.perf_counter() - self.t0
            running = {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1),
                       "images_per_s": (sums.steps_done - self.first_step) * self.batch
                       / max(elapsed, 1e-9)}
        # summed over the members of a fused group (sums of shape (K,)): the group's running mean
        stacked = torch.stack([sums.loss_sum, sums.correct, sums.seen]).detach()
        stacked = stacked.reshape(3, -1).sum(1)  # (3,)
        pin = stacked.device.type == "cuda"
        self.pending = torch.empty(3, pin_memory=pin)
        self.pending.copy_(stacked, non_blocking=pin)
        self.reporter.step(sums.steps_done, running)


def loggable(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def update_best(cfg: RunConfig, best: dict[str, Any], epoch: int, metrics: dict[str, Any],
                 data: RunData) -> dict[str, Any]:
    """Select on validation, never on test; without a validation split, the last epoch."""
    key = cfg.run.select_metric
    if data.val is None or not cfg.run.save_best:
        return {"value": metrics.get(key), "epoch": epoch, "metrics": metrics}
    value = metrics[key]
    better = best["value"] is None or (value > best["value"] if key.endswith("acc")
                                       else value < best["value"])
    return {"value": value, "epoch": epoch, "metrics": metrics} if better else best


def summary_metrics(best: dict[str, Any], data: RunData) -> dict[str, float]:
    m = best["metrics"]
    if not m:
        return {}
    out = {BEST_EPOCH: float(best["epoch"]), TEST_ACC_AT_BEST: m["test_acc"],
           TEST_LOSS_AT_BEST: m["test_loss"]}
    if "val_acc" in m:
        out[BEST_VAL_ACC] = m["val_acc"]
    for i in range(len(data.classes)):
        out[CLASS_ACC_AT_BEST.format(i=i)] = m[f"test_acc_class_{i}"]
    return out


def save_run_state(path: Path, cfg: RunConfig, *, model_state: dict[str, Any],
                   optimizer_state: dict[str, Any], epoch: int, best: dict[str, Any],
                   history: list[dict[str, Any]], sums: TrainSums | None,
                   rng: dict[str, Any], dataset_fingerprint: str) -> None:
    """A run's checkpoint (keys in ARCHITECTURE.md). `epoch` is the epoch to continue with;
    `sums` the partial epoch when interrupted; `rng` the global RNG state (`rng_state`);
    `dataset_fingerprint` the data it trains on, so a resume on changed data is refused."""
    save_checkpoint(path, {
        "model": model_state, "optimizer": optimizer_state,
        "config": cfg.to_dict(), "epoch": epoch, "best": best, "history": history,
        "sums": sums.state_dict() if sums is not None else None,
        "rng": rng, "cifarctl_version": __version__,
        "dataset_fingerprint": dataset_fingerprint,
    })


# ---- tracking: what a run records -------------------------------------------------------

def _git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def log_run_start(cfg: RunConfig, tracker: Tracker, data: RunData, device: torch.device) -> None:
    import yaml

    tracker.log_params(cfg.to_flat())
    tags = {
        "dataset": data.name, "dataset_fingerprint": data.fingerprint, TRAINER_TAG: owner(),
        "class_counts": ",".join(map(str, data.train_counts)),
        "class_names": ",".join(data.classes),
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch_version": torch.__version__, "cifarctl_version": __version__,
        # filter tags for the MLflow UI (issue 9)
        "model": cfg.model.name, "loss": cfg.loss.name, "beta": f"{cfg.loss.beta:g}",
        "gamma": f"{cfg.loss.gamma:g}", "imbalance": f"{cfg.data.imbalance:g}",
        "seed": str(cfg.run.seed),
        "selection": ("best validation epoch" if data.val is not None and cfg.run.save_best
                      else "final epoch (no validation split)" if data.val is None
                      else "final epoch (save_best off)"),
    }
    commit = _git_commit()
    if commit:
        tags["git_commit"] = commit
    tracker.set_tags(tags)
    tracker.log_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")
    tracker.log_dataset(data.name, data.fingerprint, cfg.data.dataset,
                        num_rows=data.train.num_samples)


def log_run_end(cfg: RunConfig, tracker: Tracker, outcome: RunOutcome, best: dict[str, Any],
                 data: RunData, ckpt_dir: Path) -> None:
    from cifarctl import plots

    if outcome.summary:
        tracker.log_metrics(outcome.summary, step=best["epoch"])
    if outcome.history:
        tracker.log_figure(plots.training_curves(outcome.history), "training_curves.png")
        m = best["metrics"]
        accs = [m[f"test_acc_class_{i}"] for i in range(len(data.classes))]
        rows = ["class,name,train_count,test_acc"] + [
            f"{i},{name},{n},{acc:.6f}"
            for i, (name, n, acc) in enumerate(zip(data.classes, data.train_counts, accs))]
        tracker.log_text("\n".join(rows) + "\n", "per_class_accuracy.csv")
        tracker.log_figure(plots.per_class_accuracy(data.classes, accs, data.train_counts,
                                                    title=f"test accuracy, epoch "
                                                          f"{best['epoch'] + 1}"),
                           "per_class_accuracy.png")
        tracker.log_figure(plots.confusion_matrix(m["test_confusion"], data.classes),
                           "confusion_matrix.png")
        # the numbers behind the PNG, for `cifarctl report`'s side-by-side matrices (issue 6)
        tracker.log_text(json.dumps(m["test_confusion"]) + "\n", "confusion_matrix.json")
    for which in ("best", "last"):
        if (ckpt_dir / f"{which}.pt").is_file():
            tracker.log_artifact(ckpt_dir / f"{which}.pt", "checkpoints")


def finish_quietly(tracker: Tracker, status: str, ckpt_dir: Path) -> None:
    """Close the run after an error without masking that error."""
    try:
        if (ckpt_dir / "last.pt").is_file():
            tracker.log_artifact(ckpt_dir / "last.pt", "checkpoints")
        tracker.finish(status)
    except Exception:  # noqa: BLE001 - the original error is the one to report
        pass


def load_resume(run_id: str, checkpoint_root: Path, tracker: Tracker | None = None
                ) -> tuple[RunConfig, dict[str, Any]]:
    """Config and state to continue `run_id` where it stopped."""
    state = find_resume_checkpoint(checkpoint_root, run_id, tracker)
    return config_from_dict(state["config"]), state


def resume_command(run_id: str, flags: str = "") -> str:
    """`cifarctl train --resume RUN_ID [flags]`: the advice a stopped run prints."""
    return f"cifarctl train --resume {run_id}" + (f" {flags}" if flags else "")


def resume_cli_flags(*, track: bool, tracking_uri: str | None, checkpoint_root: Path) -> str:
    """The flags besides the run id that `train --resume` needs to find a run launched with
    these settings again: a resume with the defaults would look in the wrong store/folder."""
    import shlex

    flags = []
    if not track:
        flags.append("--no-track")
    elif tracking_uri is not None:
        flags.append(f"--tracking-uri {shlex.quote(tracking_uri)}")
    if checkpoint_root != Path("checkpoints"):
        flags.append(f"--checkpoints {shlex.quote(str(checkpoint_root))}")
    return " ".join(flags)


def check_same_data(run_id: str, state: dict[str, Any], data: RunData, spec: str) -> None:
    """Refuse to resume on data other than the run trained on (a regenerated synthetic set,
    a re-imported folder): one run's metrics would come from two datasets."""
    saved = state.get("dataset_fingerprint")  # absent in checkpoints written before this check
    if saved is not None and saved != data.fingerprint:
        raise UsageError(f"run {run_id} trained on {spec} with fingerprint {saved}, but {spec} "
                         f"is now {data.fingerprint} (regenerated or re-imported?); a resume "
                         f"would mix two datasets in one run: train a new run instead")


def check_resumable(run_id: str, tracking_uri: str | None) -> None:
    """Refuse to resume a sweep's parent (it trains nothing itself) or a run that a live
    process on this machine is still training (its `TRAINER_TAG`): both would log the same
    epochs. The run is only read, not reopened."""
    from cifarctl.tracking.mlflow_tracker import connect, get_run

    run = get_run(connect(tracking_uri), run_id)
    if SWEEP_KEY_TAG in run.data.tags:
        spec = run.data.params.get("sweep.spec", "SPEC")
        raise UsageError(f"run {run_id} is a sweep's parent run: its trials are its child "
                         f"runs; resume them all with `cifarctl sweep {spec}` (the same spec "
                         f"and --set options), or one with `cifarctl train --resume CHILD_ID`")
    if run.info.status != "RUNNING":
        return
    pid = alive_owner(run.data.tags.get(TRAINER_TAG, ""))
    if pid is not None:
        raise UsageError(f"run {run_id} is being trained right now by process {pid}; wait for "
                         f"it, or stop it (Ctrl-C there, or `kill {pid}`) and resume then")


def launch(cfg: RunConfig | None, *, resume_run_id: str | None = None,
           device_override: str | None = None, track: bool = True,
           tracking_uri: str | None = None, parent_run_id: str | None = None,
           extra_tags: dict[str, str] | None = None,
           checkpoint_root: Path = Path("checkpoints"), quiet: bool = False,
           reporter: Reporter | None = None) -> RunOutcome:
    """Open the tracker (failing fast on an unreachable server), then `train`.

    The device and the data are checked first: a new run is created only once they are
    good, so a typo'd dataset or a missing GPU leaves no empty FAILED run in MLflow. With
    `resume_run_id` the config comes from that run's checkpoint (`cfg` is ignored), logging
    continues in the same MLflow run, and a refused resume leaves the run as it was.
    """
    from cifarctl.progress import make_reporter
    from cifarctl.tracking import check_reachable, open_tracker, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if track:
        check_reachable(uri)  # fail before loading data
    state = None
    if resume_run_id is not None:
        if track:
            check_resumable(resume_run_id, tracking_uri)
        tracker = open_tracker(track, experiment="", tracking_uri=tracking_uri,
                               run_id=resume_run_id)
        try:
            cfg, state = load_resume(resume_run_id, checkpoint_root, tracker)
            if state["epoch"] >= cfg.optim.epochs and state.get("sums") is None:
                raise UsageError(f"run {resume_run_id} already trained all its "
                                 f"{cfg.optim.epochs} epochs: nothing to resume; evaluate it "
                                 f"with `cifarctl eval {resume_run_id}`")
            if tracker.opened_status == "FINISHED":  # a stale checkpoint would train again
                raise UsageError(f"run {resume_run_id} is FINISHED: nothing to resume; "
                                 f"evaluate it with `cifarctl eval {resume_run_id}`")
            if device_override:
                cfg = apply_overrides(cfg, {"run.device": device_override})
            data = prepare_data(cfg, resolve_device(cfg.run.device))
            check_same_data(resume_run_id, state, data, cfg.data.dataset)
        except BaseException:  # refused: the run keeps the status it had
            if tracker.opened_status in RUN_STATUSES:
                tracker.finish(tracker.opened_status)
            raise
        if not track:
            tracker.run_id = resume_run_id  # keep the checkpoint folder of the local run
    else:
        assert cfg is not None
        device = resolve_device(cfg.run.device)
        data = prepare_data(cfg, device)  # before the run exists
        tracker = open_tracker(track, experiment=cfg.run.experiment, tracking_uri=tracking_uri,
                               run_name=cfg.run.run_name or default_run_name(cfg),
                               parent_run_id=parent_run_id, tags=extra_tags,
                               description=describe(cfg))
    flags = resume_cli_flags(track=track, tracking_uri=tracking_uri,
                             checkpoint_root=checkpoint_root)
    reporter = reporter or make_reporter(quiet=quiet)
    if state is None:  # where the numbers go, first thing in a log (a resume says so itself)
        where = (f"run {tracker.run_id} in experiment {cfg.run.experiment!r} of {uri}"
                 if tracker.run_id
                 else "untracked run (--no-track)")
        reporter.message(f"{where}: {cfg.model.name}, loss {cfg.loss.name}, "
                         f"{data.train.num_samples:,} training images of {data.name}, "
                         f"{cfg.optim.epochs} epoch{'s' * (cfg.optim.epochs != 1)} on {device}")
    return train(cfg, tracker=tracker, reporter=reporter, checkpoint_root=checkpoint_root,
                 resume=state, data=data, resume_flags=flags)
