"""`cifarctl eval`: a trained checkpoint's accuracy, per class, per shot group, calibrated,
and under corruption, logged back to its run.

    target = resolve_target("3f2c...", which="best")           # a run id or a .pt path
    result = evaluate_target(target, corruptions=list(CORRUPTIONS))
    log_result(result, target)                                  # eval_* metrics + eval/ PNGs

The clean pass and every corrupted pass go through `engine.evaluate` (confusion matrix and
calibration bins on the device); all of them reach the host in one sync at the end.
Logging opens the run by id without touching its status, end time or training metrics:
only `eval_*` metrics and files under `eval/` are added (ARCHITECTURE.md, "Eval").
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cifarctl.config import RunConfig
from cifarctl.errors import UsageError
from cifarctl.evaluation import CORRUPTION_NAMES, posthoc
from cifarctl.evaluation.corruptions import SEVERITIES, check_names, corrupt, corruption_generator
from cifarctl.evaluation.scores import (
    SHOT_GROUPS,
    expected_calibration_error,
    group_accuracies,
    shot_groups,
)
from cifarctl.evaluation.target import (  # noqa: F401  (resolve_target, WHICH: eval's API)
    WHICH,
    EvalTarget,
    data_warnings,
    resolve_target,
    run_warnings,
)

SPLITS = ("test", "val")


# ---- the evaluation ------------------------------------------------------------------------

@dataclass
class EvalResult:
    """What `eval` measured: plain numbers (fractions), ready for tables, JSON and MLflow."""

    source: str  # the run id or checkpoint path evaluated
    run_id: str | None
    which: str
    epoch: int | None  # epochs the evaluated checkpoint had trained
    dataset: str
    split: str
    class_names: list[str]
    train_counts: list[int] | None
    images: int
    accuracy: float
    loss: float
    per_class: list[float]
    confusion: list[list[int]]
    ece: float
    shots: dict[str, float | None]
    shot_classes: dict[str, list[int]]
    corruptions: dict[str, list[float]] = field(default_factory=dict)  # name -> s1..s5
    # post-hoc logit adjustment, one entry per tau: tau, metric, accuracy, per_class, shots
    logit_adjusted: list[dict[str, Any]] = field(default_factory=list)
    mean_corruption_acc: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # eval_* names, as logged
    warnings: list[str] = field(default_factory=list)  # why these numbers may mislead
    artifact_dir: str = "eval"
    seed: int = 0  # the corruptions' random draws (`eval --seed`): their numbers depend on it
    logged: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", Path(text).name.split(".")[0]).strip("_").lower()


def metric_prefixes(which: str, split: str, foreign: str | None) -> tuple[str, str]:
    """(accuracy prefix, other prefix) of the eval metric names.

    Defaults (best checkpoint, test split, the run's own dataset): `eval_test_acc`,
    `eval_test_acc_class_<i>`, `eval_ece`, `eval_many_acc`, `eval_corruption_<name>_s<k>`.
    `--which last` inserts `last_`, another dataset its name (`eval_cifar10_jpeg_...`), and
    the validation split `val` (`eval_val_acc`, `eval_val_ece`).
    """
    qualifier = ("last_" if which == "last" else "") + (f"{foreign}_" if foreign else "")
    return f"eval_{qualifier}{split}", f"eval_{qualifier}" + ("val_" if split == "val" else "")


def _split_arrays(cfg: RunConfig, data: Any, split: str) -> tuple[Any, Any]:
    from cifarctl.training import run_splits

    if split == "test":
        return data.test_images, data.test_labels
    val_idx = run_splits(cfg, data, check=False).val_idx
    if len(val_idx) == 0:
        why = ("it trained with data.val_per_class=0" if cfg.data.val_per_class == 0
               else "long-tailed runs keep none by default: data.val_per_class=0"
               if cfg.data.imbalance > 1 else "a tenth of its classes' images is none")
        raise UsageError(f"this run has no validation split ({why}); use --split test")
    return data.train_images[val_idx], data.train_labels[val_idx]


def _own_counts(target: EvalTarget, data: Any, same_dataset: bool) -> list[int] | None:
    """The run's training images per class: its tag, else recomputed from its config."""
    if target.train_counts is not None:
        return target.train_counts
    from cifarctl.data import load_dataset
    from cifarctl.training import run_splits

    try:
        own = data if same_dataset else load_dataset(target.cfg.data.dataset)
    except UsageError:
        return None  # the training data is not here: shot groups are left out, and said so
    return run_splits(target.cfg, own, check=False).train_counts


def corrupted_batches(loader: Any, name: str, severity: int, *, seed: int = 0,
                      batch_size: int = 1024) -> Iterator[tuple[Any, Any]]:
    """The loader's images in order, un-augmented, corrupted, then normalised:
    (x (B, 3, H, W) float32, y (B,) int64) on the loader's device. A `subset()` loader gives
    its own rows, in their order."""
    from cifarctl.data.loader import normalize

    generator = corruption_generator(seed, name, severity, loader.device)
    for start in range(0, loader.num_samples, batch_size):
        # a subset view shares its parent's `images`: its rows say which of them it holds
        idx = (slice(start, start + batch_size) if loader.rows is None
               else loader.rows[start:start + batch_size])
        x = loader.images[idx]                                         # (B, 3, H, W) uint8
        yield normalize(corrupt(x, name, severity, generator)), loader.labels[idx]


def accuracy_under(model: Any, loader: Any, name: str, severity: int, *, num_classes: int,
                   seed: int = 0, batch_size: int = 1024) -> Any:
    """Top-1 accuracy of `model` on the loader's images under `name` at `severity`, as a
    0-dim tensor on the device (no host sync). Severity 0 is the clean accuracy."""
    from cifarctl.engine import evaluate

    counts = evaluate(model, corrupted_batches(loader, name, severity, seed=seed,
                                               batch_size=batch_size), num_classes=num_classes)
    return counts.confusion.diagonal().sum() / counts.count.clamp_min(1)


def _load_model(target: EvalTarget, spec: str, classes: int, device: Any) -> Any:
    """The checkpoint's model in eval mode on `device`; UsageError if its weights do not fit
    its config over `classes` classes."""
    from cifarctl.models import create_model

    cfg = target.cfg
    model = create_model(cfg.model.name, num_classes=classes, classifier=cfg.classifier)
    try:
        model.load_state_dict(target.saved.model)
    except RuntimeError:
        trained = _classes_trained(target.saved.model, model)
        if trained is not None and trained != classes:
            raise UsageError(f"{target.checkpoint} was trained on {trained} classes, but {spec} "
                             f"has {classes}; evaluate it on data with its classes") from None
        raise UsageError(f"{target.checkpoint} does not hold the weights its config describes "
                         f"for {spec}: {cfg.model.name} with a {cfg.classifier} classifier "
                         f"over {classes} classes") from None
    return model.to(device).eval()


def _classes_trained(saved: dict[str, Any], model: Any) -> int | None:
    """The class count of a checkpoint's final layer (`model.classifier`, ARCHITECTURE.md
    "Models"), read off the axis on which it differs from `model`'s; None if unknown."""
    key = "classifier.weight"
    if key not in saved or key not in model.state_dict():
        return None
    got, built = tuple(saved[key].shape), tuple(model.state_dict()[key].shape)
    differ = [axis for axis, (a, b) in enumerate(zip(got, built)) if a != b]
    return got[differ[0]] if len(got) == len(built) and len(differ) == 1 else None


def evaluate_target(target: EvalTarget, *, dataset: str | None = None, split: str = "test",
                    corruptions: Sequence[str] = (), device: str = "auto", seed: int = 0,
                    batch_size: int | None = None, progress: Callable[[str], None] | None = None,
                    logit_adjust: Sequence[float] = (), log: bool = True) -> EvalResult:
    """Evaluate `target` on `split` of `dataset` (default: the run's own), clean, under
    `corruptions` (names of `CORRUPTIONS`, each at severities 1..5), and with its logits
    adjusted post hoc by each tau of `logit_adjust` (`posthoc`, Menon et al. 2021). `log`:
    whether the caller logs the result (the warnings about logging say so only then)."""
    from cifarctl.data import load_dataset
    from cifarctl.data.loader import DeviceLoader
    from cifarctl.engine import eval_metrics, evaluate, to_host
    from cifarctl.training import EVAL_BATCH, resolve_device

    if split not in SPLITS:
        raise UsageError(f"--split must be test or val, got {split!r}")
    progress = progress or (lambda message: None)
    cfg = target.cfg
    spec = dataset or cfg.data.dataset
    dev = resolve_device(device)  # a bad --device before the data loads
    data = load_dataset(spec)
    classes = len(data.classes)
    model = _load_model(target, spec, classes, dev)
    images, labels = _split_arrays(cfg, data, split)
    batch = batch_size or EVAL_BATCH
    loader = DeviceLoader(images, labels, batch_size=batch, shuffle=False, augment=False,
                          drop_last=False, seed=0, device=dev)
    foreign = _slug(spec) if dataset and dataset != cfg.data.dataset else None
    # the run's own dataset, regenerated since: its numbers must not pass for the run's own
    # (the report reads eval_test_acc etc.), so they are named after the data they are on
    changed = (foreign is None and bool(target.fingerprint)
               and target.fingerprint != data.fingerprint)
    qualifier = f"data_{data.fingerprint[:8]}" if changed else foreign
    acc_prefix, prefix = metric_prefixes(target.which, split, qualifier)

    counts = _own_counts(target, data, same_dataset=foreign is None)
    # each tau's metric names: its name after the others' (`eval_la1_test_acc`)
    adjusted = [metric_prefixes(target.which, split, "_".join(
        filter(None, (qualifier, posthoc.tau_name(tau))))) for tau in logit_adjust]
    counter = (_adjusted_counter(counts, logit_adjust, classes=classes, sampler=cfg.data.sampler,
                                 device=dev) if logit_adjust else None)
    progress(f"clean {split} set: {loader.num_samples} images")
    clean = evaluate(model, loader.epoch(0), num_classes=classes, logit_scale=cfg.logit_scale,
                     on_logits=counter.add if counter else None)  # one pass for both
    device_values: dict[str, Any] = {**eval_metrics(acc_prefix, clean),
                                     "confusion": clean.confusion, "calibration": clean.calibration}
    if counter:
        device_values |= posthoc.adjusted_metrics(counter.counts, [acc for acc, _ in adjusted])
    for name in corruptions:
        progress(f"{name}: severities 1-{SEVERITIES}")
        for severity in range(1, SEVERITIES + 1):
            device_values[f"{prefix}corruption_{name}_s{severity}"] = accuracy_under(
                model, loader, name, severity, num_classes=classes, seed=seed, batch_size=batch)
    host = to_host(device_values)  # the one host sync
    result = _result(target, host, counts, data, spec=spec, split=split, corruptions=corruptions,
                     prefixes=(acc_prefix, prefix), images=loader.num_samples)
    result.seed = seed
    for tau, prefixes in zip(logit_adjust, adjusted):
        per_class, shots, shot_metrics = _class_scores(host, prefixes, counts, classes)
        metric = f"{prefixes[0]}_acc"
        result.logit_adjusted.append({"tau": tau, "metric": metric, "accuracy": host[metric],
                                      "per_class": per_class, "shots": shots})
        result.metrics |= shot_metrics
    result.warnings = _warnings(target, data, spec, changed=changed, prefix=prefix, log=log)
    return result


def _warnings(target: EvalTarget, data: Any, spec: str, *, changed: bool, prefix: str,
              log: bool) -> list[str]:
    """Why the numbers may mislead; what logging them means only when they are logged."""
    out = [*run_warnings(target, log), *data_warnings(target, data, spec, changed=changed)]
    if changed and log and target.run_id is not None:
        out.append(f"logged as {prefix}* (not eval_*), so `cifarctl report` does not take "
                   f"them for the run's own test set")
    return out


def _adjusted_counter(counts: list[int] | None, taus: Sequence[float], *, classes: int,
                      sampler: str, device: Any) -> posthoc.AdjustedCounts:
    """What counts the post-hoc adjusted predictions, per tau, during the clean pass."""
    if not counts or len(counts) != classes:
        raise UsageError("--logit-adjust subtracts the run's training prior, but its class "
                         "counts are unknown (no class_counts tag and its dataset is not "
                         "here); evaluate it where its training data is")
    from cifarctl.data.samplers import class_probabilities

    # the prior the run trained under: its counts as its sampler drew them (instance: n_c /
    # sum n; a class-balanced run's is uniform, which no adjustment changes)
    prior = class_probabilities(counts, sampler).log().to(device)
    return posthoc.AdjustedCounts(prior, taus, classes)


def _class_scores(host: dict[str, Any], prefixes: tuple[str, str], counts: list[int] | None,
                  classes: int) -> tuple[list[float], dict[str, float | None], dict[str, float]]:
    """One set of predictions' per-class and shot-group accuracies, and the latter's metrics
    (`eval_many_acc`, ...); groups are None without the run's class counts."""
    acc_prefix, prefix = prefixes
    per_class = [host[f"{acc_prefix}_acc_class_{i}"] for i in range(classes)]
    shots = group_accuracies(per_class, counts) if counts and len(counts) == classes else \
        dict.fromkeys(SHOT_GROUPS)
    return per_class, shots, {f"{prefix}{g}_acc": v for g, v in shots.items() if v is not None}


def _result(target: EvalTarget, host: dict[str, Any], counts: list[int] | None, data: Any, *,
            spec: str, split: str, corruptions: Sequence[str], prefixes: tuple[str, str],
            images: int) -> EvalResult:
    """The evaluation's host numbers as an `EvalResult`, with its `eval_*` metrics."""
    acc_prefix, prefix = prefixes
    confusion = [[int(v) for v in row] for row in host.pop("confusion")]
    ece = expected_calibration_error(host.pop("calibration"))
    per_class, shots, shot_metrics = _class_scores(host, prefixes, counts, len(data.classes))
    corrupted = {name: [host[f"{prefix}corruption_{name}_s{s}"] for s in range(1, SEVERITIES + 1)]
                 for name in corruptions}
    values = [a for accs in corrupted.values() for a in accs]
    mean_corruption = sum(values) / len(values) if values else None
    metrics = {k: v for k, v in host.items() if isinstance(v, float)}
    metrics |= {f"{prefix}ece": ece, **shot_metrics}
    if mean_corruption is not None:
        metrics[f"{prefix}mean_corruption_acc"] = mean_corruption
    return EvalResult(
        source=target.run_id or str(target.checkpoint), run_id=target.run_id,
        which=target.which, epoch=target.epoch, dataset=spec, split=split,
        class_names=list(data.classes), train_counts=counts, images=images,
        accuracy=host[f"{acc_prefix}_acc"], loss=host[f"{acc_prefix}_loss"], per_class=per_class,
        confusion=confusion, ece=ece, shots=shots,
        shot_classes=shot_groups(counts) if counts else {g: [] for g in SHOT_GROUPS},
        corruptions=corrupted, mean_corruption_acc=mean_corruption, metrics=metrics,
        artifact_dir="eval" if prefix == "eval_" else f"eval/{prefix[len('eval_'):-1]}")


# ---- logging back to the run -------------------------------------------------------------

def log_result(result: EvalResult, target: EvalTarget) -> bool:
    """Add `result` to its run: `eval_*` metrics and `<artifact_dir>/` files; False if the
    checkpoint belongs to no run. `RunStore.tracker` does not reopen the run: its status and
    end time stay as they were."""
    from cifarctl import plots
    from cifarctl.tracking.runstore import open_store

    if target.run_id is None:
        return False
    tracker = open_store(target.tracking_uri).tracker(target.run_id)
    tracker.log_metrics(result.metrics, step=0)
    with tempfile.TemporaryDirectory(prefix="cifarctl-eval-") as tmp:
        out = Path(tmp)
        (out / "results.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        (out / "confusion_matrix.json").write_text(json.dumps(result.confusion) + "\n")
        plots.save_png(plots.confusion_matrix(result.confusion, result.class_names),
                       out / "confusion_matrix.png")
        if result.corruptions:
            plots.save_png(plots.corruption_heatmap(list(result.corruptions),
                                                    list(result.corruptions.values()),
                                                    result.accuracy), out / "corruptions.png")
        tracker.log_artifact(out, result.artifact_dir)
    result.logged = True
    return True


def run_eval(target: str, *, which: str | None = None, checkpoint_root: Path = Path("checkpoints"),
             tracking_uri: str | None = None, corruptions: Sequence[str] = (),
             all_corruptions: bool = False, log: bool = True, batch_size: int | None = None,
             **evaluate: Any) -> EvalResult:
    """What `cifarctl eval` does: check the options, find the checkpoint, evaluate it
    (`evaluate` as `evaluate_target`'s keywords) and, unless `log` is off, log the result to
    its run (`result.logged` says whether there was one)."""
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    names = list(corruptions) or (list(CORRUPTION_NAMES) if all_corruptions else [])
    check_names(names)
    found = resolve_target(target, which=which, checkpoint_root=checkpoint_root,
                           tracking_uri=tracking_uri)
    result = evaluate_target(found, corruptions=names, batch_size=batch_size, log=log,
                             **evaluate)
    if log:
        log_result(result, found)
    return result
