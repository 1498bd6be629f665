"""The run configuration's sections: every field with its default, unit or source, and range.

    cfg = RunConfig()                     # the published protocol's defaults (SPEC 2),
                                          # but x0.1 (not x0.01) at each step
    cfg.optim.lr, cfg.to_flat()["loss.beta"], cfg.classifier

A field is declared once, with `_f(default, help)`: its help is what `cifarctl config keys` and
the README show; each section's `checks()` holds its ranges (`validate` runs them). Fields
added after sweeps' trial keys existed are declared `later=True`: at their default they stay
out of trial keys and `report` reads a run that never logged them as having the default, so
earlier sweeps and runs keep their keys and groups. Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from cifarctl.config.rules import (
    AUGMENT_POLICIES,
    LABEL_AWARE,
    RANDAUGMENT_BINS,
    SAMPLERS,
    SCHEDULES,
    SIGMOID_PREFIX,
    normalize_augment,
)


def _f(default: Any, help: str, *, later: bool = False) -> Any:
    """A dataclass field carrying its help text (`config keys`, the README; `{models}` and
    `{losses}` name the registries) and whether it was added `later` than trial keys."""
    meta = {"help": help, "later": later}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


Check = tuple[bool, str]  # (holds, the one-line message when it does not)


@dataclass
class ModelSection:
    name: str = _f("resnet32", "architecture, one of {models}")
    classifier: str = _f("auto", "final layer: `linear`, `normed` (cosine classifier of Cao et "
                         "al.'s LDAM code) or `auto` (normed for `ldam`, linear otherwise)")
    # two-stage training (issue 18): cifarctl.training.stages
    reinit_classifier: bool = _f(False, "two-stage training: the classifier starts afresh "
                                 "instead of from run.init_from's (cRT, Kang et al. 2020)",
                                 later=True)


@dataclass
class DataSection:
    dataset: str = _f("cifar10", "`cifar10` (downloaded once), `synthetic`, or a path to a "
                      "directory / .tar.gz of CIFAR batches or image folders")
    imbalance: float = _f(1.0, "imbalance ratio n_max/n_min of the training set; 1 = balanced "
                          "(Cui et al. 2019)")
    imbalance_type: str = _f("exp", "long-tail profile: `exp` (Cui et al.) or `step`")
    val_per_class: int | None = _f(None, "images per class held out for model selection, before "
                                   "the long-tail subsampling; default 500 (balanced) or 0 "
                                   "(long-tailed, so the published counts hold)")
    augment: bool | str = _f(True, "augmentation policy: `crop-flip` (= true: random crop with "
                             "4-pixel padding + horizontal flip, the published protocol of Cui et "
                             "al., Cao et al.), `none` (= false), or crop-flip followed by "
                             "`autoaugment` (Cubuk et al. 2019, CIFAR-10 policy) or `randaugment` "
                             "(Cubuk et al. 2020)")
    # class-aware sampling (issue 18): cifarctl.data.samplers
    sampler: str = _f("instance", "training batches: `instance` (each image once an epoch), "
                      "`class-balanced` (each class equally likely) or `sqrt` (class c with "
                      "probability proportional to sqrt(n_c)), drawn with replacement (Kang "
                      "et al. 2020)", later=True)
    # the modern recipe (issue 19): policies' dials, Cutout, mixup / CutMix
    randaugment_n: int = _f(2, "RandAugment: operations per image (N; torchvision's default)",
                            later=True)
    randaugment_m: int = _f(9, "RandAugment: magnitude bin M of 0..30 (torchvision's 31 bins "
                            "and default)", later=True)
    cutout: int = _f(0, "Cutout after the policy: a square of this many pixels zeroed at a "
                     "random centre, clipped at the border (DeVries & Taylor 2017: 16); 0 = off",
                     later=True)
    mixup_alpha: float = _f(0.0, "mixup (Zhang et al. 2018): lambda ~ Beta(alpha, alpha) per "
                            "batch (MiSLAS: 1); 0 = off", later=True)
    cutmix_alpha: float = _f(0.0, "CutMix (Yun et al. 2019): lambda ~ Beta(alpha, alpha), a box "
                             "of area 1 - lambda pasted per batch (their CIFAR: 1); 0 = off",
                             later=True)
    mix_prob: float = _f(1.0, "probability that a batch is mixed when mixup or CutMix is on (with "
                         "both on, each mixed batch picks one with probability 1/2)", later=True)

    def checks(self) -> list[Check]:
        augment = normalize_augment(self.augment)
        return [
            (self.sampler in SAMPLERS, f"data.sampler must be one of {', '.join(SAMPLERS)}, "
                                       f"got {self.sampler!r}"),
            (self.imbalance >= 1,
             f"data.imbalance must be >= 1 (1 = balanced), got {self.imbalance}"),
            (self.imbalance_type in ("exp", "step"),
             f"data.imbalance_type must be 'exp' or 'step', got {self.imbalance_type!r}"),
            (self.val_per_class is None or self.val_per_class >= 0,
             f"data.val_per_class must be >= 0, got {self.val_per_class}"),
            (isinstance(augment, bool) or augment in AUGMENT_POLICIES,
             f"data.augment must be crop-flip (true), none (false), "
             f"{' or '.join(AUGMENT_POLICIES)}, got {self.augment!r}"),
            (self.randaugment_n >= 0, f"data.randaugment_n must be >= 0, got {self.randaugment_n}"),
            (0 <= self.randaugment_m < RANDAUGMENT_BINS,
             f"data.randaugment_m must be in 0..{RANDAUGMENT_BINS - 1}, got {self.randaugment_m}"),
            (self.cutout >= 0, f"data.cutout must be >= 0 pixels, got {self.cutout}"),
            (self.mixup_alpha >= 0, f"data.mixup_alpha must be >= 0, got {self.mixup_alpha}"),
            (self.cutmix_alpha >= 0, f"data.cutmix_alpha must be >= 0, got {self.cutmix_alpha}"),
            (0 <= self.mix_prob <= 1, f"data.mix_prob must be in [0, 1], got {self.mix_prob}"),
        ]


@dataclass
class OptimSection:
    epochs: int = _f(200, "training epochs (published protocol: 200)")
    batch_size: int = _f(128, "images per SGD step")
    lr: float = _f(0.1, "peak learning rate, reached after the warm-up")
    momentum: float = _f(0.9, "SGD momentum")
    nesterov: bool = _f(False, "Nesterov momentum")
    weight_decay: float = _f(2e-4, "L2 weight decay (`reg` in the assignment); published: 2e-4")
    warmup: int = _f(5, "epochs of linear learning-rate warm-up (published: 5); 0 = none")
    steps: list[int] = _f([160, 180], "epochs at which the learning rate is multiplied by "
                          "`decay` (published: 160, 180)")
    decay: float | list[float] = _f(0.1, "factor applied at each step, or one factor per step "
                                    "(the published protocol: [0.01, 0.01])")
    # two-stage training (issue 18): cifarctl.training.stages
    train: str = _f("all", "what trains: `all`, or `classifier` (every other weight and "
                    "BatchNorm statistic frozen: stage 2 of decoupled training, Kang et al. "
                    "2020; needs run.init_from)", later=True)
    max_norm: float | None = _f(None, "MaxNorm (Alshammari et al. 2022): after each step each "
                                "class's classifier weights are projected onto ||w_c|| <= "
                                "min + max_norm * (max - min) of the norms at the start (their "
                                "code: 0.1); none = off", later=True)
    # the modern recipe (issue 19): sharpness-aware minimisation, cosine schedule
    sam_rho: float = _f(0.0, "SAM (Foret et al. 2021): radius of the ascent step rho * g / ||g|| "
                        "(Rangwani et al. 2022: 0.5-0.8, Wang et al. 2023: 0.1-0.4); 0 = off",
                        later=True)
    schedule: str = _f("step", "learning-rate schedule after the warm-up: `step` (x `decay` at "
                       "`steps`) or `cosine` (down to `min_lr` at the last step)", later=True)
    min_lr: float = _f(0.0, "cosine schedule: the learning rate it ends at", later=True)

    @property
    def decay_factors(self) -> list[float]:
        """One multiplicative factor per entry of `steps`."""
        decay = self.decay
        return list(decay) if isinstance(decay, list) else [decay] * len(self.steps)

    def checks(self) -> list[Check]:
        steps = self.steps
        return [
            (self.epochs >= 1, f"optim.epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"optim.batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"optim.lr must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"optim.momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}"),
            (self.warmup >= 0, f"optim.warmup must be >= 0 epochs, got {self.warmup}"),
            (all(s >= 0 for s in steps), f"optim.steps must be epochs >= 0, got {steps}"),
            (all(a < b for a, b in zip(steps, steps[1:])),
             f"optim.steps must be strictly increasing, got {steps}"),
            (not isinstance(self.decay, list) or len(self.decay) == len(steps),
             f"optim.decay lists one factor per step: {len(steps)} steps but decay={self.decay}"),
            (all(0 < f <= 1 for f in self.decay_factors),
             f"optim.decay factors must be in (0, 1], got {self.decay}"),
            (self.train in ("all", "classifier"),
             f"optim.train must be all or classifier, got {self.train!r}"),
            (self.max_norm is None or self.max_norm >= 0,
             f"optim.max_norm must be >= 0, got {self.max_norm}"),
            (self.sam_rho >= 0, f"optim.sam_rho must be >= 0 (0 = plain SGD), got {self.sam_rho}"),
            (self.schedule in SCHEDULES,
             f"optim.schedule must be {' or '.join(SCHEDULES)}, got {self.schedule!r}"),
            (0 <= self.min_lr <= self.lr,
             f"optim.min_lr must be in [0, optim.lr={self.lr:g}], got {self.min_lr}"),
        ]


@dataclass
class LossSection:
    name: str = _f("ce", "loss, one of {losses}")
    beta: float = _f(0.0, "class-balanced weighting (Cui et al. 2019) in [0, 1); 0 = unweighted")
    gamma: float = _f(1.0, "focal-loss focusing parameter, 0 = cross-entropy; `vs`: the "
                       "exponent of Delta_c = (n_c / n_max)^gamma")
    drw_epoch: int | None = _f(None, "deferred re-weighting (Cao et al. 2019): unweighted until "
                               "this epoch, class-balanced from it; none = weighted throughout")
    alpha: float = _f(0.5, "hybrid loss CE + (1 - alpha) * focal")
    max_m: float = _f(0.5, "LDAM: largest margin")
    s: float = _f(30.0, "LDAM: logit scale")
    # logit-adjusted losses (issue 18): cifarctl.losses.adjusted
    tau: float = _f(1.0, "logit adjustment: `la` trains on z_c + tau log(pi_c) (Menon et al. "
                    "2021), `vs` adds iota_c = tau log(pi_c) (Kini et al. 2021)", later=True)
    # the modern recipe (issue 19): label smoothing, MiSLAS's label-aware smoothing
    smoothing: float | str = _f(0.0, "label smoothing of the softmax losses: eps in [0, 1), or "
                                "`label-aware` (MiSLAS, Zhong et al. 2021: per class, from "
                                "`smoothing_head` for the most frequent to `smoothing_tail` for "
                                "the rarest); 0 = off", later=True)
    smoothing_head: float = _f(0.3, "label-aware smoothing of the most frequent class (MiSLAS, "
                               "CIFAR-10 LT-100: 0.3; LT-10: 0.1)", later=True)
    smoothing_tail: float = _f(0.0, "label-aware smoothing of the rarest class (MiSLAS: 0.0)",
                               later=True)

    def checks(self) -> list[Check]:
        # smoothing: a factor in [0, 1) or `label-aware`, and only for the softmax losses (a
        # sigmoid loss has no distribution over classes to smooth)
        smoothing = self.smoothing
        label_aware = isinstance(smoothing, str) and smoothing.strip().lower() == LABEL_AWARE
        number = isinstance(smoothing, (int, float))
        on = label_aware or (number and smoothing != 0)
        return [
            (0 <= self.beta < 1, f"loss.beta must be in [0, 1) (beta = 1 makes every class "
                                 f"weight 0/0), got {self.beta}"),
            (self.gamma >= 0, f"loss.gamma must be >= 0, got {self.gamma}"),
            (0 <= self.alpha <= 1, f"loss.alpha must be in [0, 1], got {self.alpha}"),
            (self.drw_epoch is None or self.drw_epoch >= 0,
             f"loss.drw_epoch must be >= 0, got {self.drw_epoch}"),
            (self.max_m > 0, f"loss.max_m must be > 0, got {self.max_m}"),
            (self.s > 0, f"loss.s must be > 0, got {self.s}"),
            (self.tau >= 0, f"loss.tau must be >= 0, got {self.tau}"),
            (label_aware or (number and 0 <= smoothing < 1),
             f"loss.smoothing must be in [0, 1) or {LABEL_AWARE}, got {smoothing!r}"),
            (all(0 <= eps < 1 for eps in (self.smoothing_head, self.smoothing_tail)),
             f"loss.smoothing_head and loss.smoothing_tail must be in [0, 1), got "
             f"{self.smoothing_head}, {self.smoothing_tail}"),
            (not (on and self.name.strip().lower().startswith(SIGMOID_PREFIX)),
             f"loss.smoothing applies to the softmax losses, not {self.name}: set "
             f"loss.smoothing=0 or choose a softmax loss"),
        ]


@dataclass
class RunSection:
    seed: int = _f(0, "seed for initialisation, data order, augmentation and subset choice")
    device: str = _f("auto", "`auto` (CUDA when available), `cpu` or `cuda`")
    compile: bool = _f(False, "torch.compile the model (its default mode): about 5% faster on "
                       "the CPU after a minute of compiling, but resnet32 ran 24% slower than "
                       "eager on an H200 (BENCHMARKS.md)")
    save_best: bool = _f(True, "keep the checkpoint with the best `select_metric` (validation, "
                         "never test); without a validation split the final epoch is kept")
    select_metric: str = _f("val_acc", "metric that picks the best epoch: val_acc or val_loss")
    experiment: str = _f("cifarctl", "MLflow experiment name")
    run_name: str | None = _f(None, "MLflow run name; default says what the run is, e.g. "
                              "resnet32-focal-b0.999-lt100-s0")
    # two-stage training (issue 18): cifarctl.training.stages
    init_from: str | None = _f(None, "two-stage training: the FINISHED run (its id) whose best "
                               "checkpoint this run starts from; in a sweep spec, a mapping "
                               "naming the stage-1 trial", later=True)

    def checks(self) -> list[Check]:
        return [
            (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             f"run.device must be auto, cpu or cuda, got {self.device!r}"),
            (self.select_metric in ("val_acc", "val_loss"),
             f"run.select_metric must be val_acc or val_loss, got {self.select_metric!r}"),
            # numpy's generators refuse a negative seed; said here, `sweep --dry-run` says it too
            (self.seed >= 0, f"run.seed must be >= 0, got {self.seed}"),
        ]


# A sweep spec's top-level keys (`cifarctl.sweep.spec.TOP_KEYS`) that no run config has:
# a spec given as --config is recognised by them.
SWEEP_ONLY_KEYS = ("grid", "base", "include", "exclude", "random")


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict, as written to `config.yaml` and reloaded by `load_config`."""
        return dataclasses.asdict(self)

    def to_flat(self) -> dict[str, Any]:
        """`{"optim.lr": 0.1, ...}`: the MLflow params of a run."""
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() for k, v in sec.items()}

    @property
    def classifier(self) -> str:
        """`linear` or `normed`: `auto` follows Cao et al.'s code (kaidic/LDAM-DRW), whose
        margins and s = 30 are meant for cosine logits; every other loss gets a linear layer."""
        return resolve_classifier(self.model.classifier, self.loss.name)

    @property
    def logit_scale(self) -> float:
        """LDAM's `loss.s`, else 1: what the training loss multiplies the logits by before its
        softmax. Evaluation scales by it too, so its cross-entropy and calibration describe
        that softmax (cosine logits alone give every class nearly the same probability)."""
        return self.loss.s if self.loss.name == "ldam" else 1.0

    def warnings(self) -> list[str]:
        """Settings that validate but are unlikely to be meant (`schedule_warnings`)."""
        from cifarctl.schedule import schedule_warnings

        o = self.optim
        milestones = o.steps if o.schedule == "step" else []  # cosine has none
        return schedule_warnings(epochs=o.epochs, warmup=o.warmup, milestones=milestones)


def default_classifier(loss: str) -> str:
    """The head `model.classifier: auto` gives a run of loss `loss`."""
    return "normed" if loss == "ldam" else "linear"


def resolve_classifier(logged: str | None, loss: str) -> str:
    """The head a run of `loss` trained, from its `model.classifier` value: `auto` as it
    resolves, None (a run or checkpoint from before the key existed) as the `linear` head
    every run had then. Configs, checkpoints and the report all read heads through it."""
    if logged is None:
        return "linear"
    return default_classifier(loss) if logged == "auto" else logged


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(RunConfig)}


