"""Published top-1 errors of ResNet-32 on long-tailed CIFAR-10, as data with their sources.

    published_for(config_keys({"loss.name": "ce", "loss.beta": "0.0"}), "exp", 100.0)
    # [Published("softmax CE", "exp", 100.0, 29.64, CUI, ...), Published("ERM", ...), ...]
    recipe_published([{"loss.name": "ldam", "optim.sam_rho": "0.4", ...}, ...])  # issue 19

SPEC 2's numbers (Cui et al., Cao et al.) and SPEC 4's later baselines (Wang et al., Menon
et al., MiSLAS; SPEC 4 quotes accuracy, kept here as 100 - accuracy). Runs are compared with
them only when they follow the same protocol (`PROTOCOL`): ResNet-32, 200 epochs, batch 128,
SGD momentum 0.9, lr 0.1 with a 5-epoch linear warm-up, x0.01 at epochs 160 and 180, weight
decay 2e-4, crop + flip. Rows whose reference code kept the epoch with the best test
accuracy say so (`test_selected`): their numbers are optimistic, and cifarctl never selects
on test. This module is torch- and pandas-free.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from cifarctl.config import later_defaults, resolve_classifier
from cifarctl.report.groups import number

CUI = ("Cui et al. 2019, Class-Balanced Loss Based on Effective Number of Samples (CVPR), "
       "long-tailed CIFAR-10 with ResNet-32")
CAO = ("Cao et al. 2019, Learning Imbalanced Datasets with Label-Distribution-Aware Margin "
       "Loss (NeurIPS), imbalanced CIFAR-10 with ResNet-32")
WANG = ("Wang et al. 2023, A Unified Generalization Analysis of Re-Weighting and "
        "Logit-Adjustment for Imbalanced Learning (NeurIPS)")
MENON = ("Menon et al. 2021, Long-tail learning via logit adjustment (ICLR), "
         "github.com/google-research/google-research/tree/master/logit_adjustment")
ZHONG = ("Zhong et al. 2021, Improving Calibration for Long-Tailed Recognition (CVPR), "
         "github.com/dvlab-research/MiSLAS")
CB_BETA = 0.9999  # the beta of both papers' class-balanced CIFAR-10 numbers


@dataclass(frozen=True)
class Published:
    """One published number: top-1 error (%) of `method` at imbalance `ratio` (`profile`)."""

    method: str  # as the paper names it
    profile: str  # exp | step (ratio 1 is balanced: either)
    ratio: float
    error: float  # top-1 error in percent
    reference: str  # the full citation, starting with the short one
    test_selected: bool  # the reference kept the epoch with the best test accuracy
    kind: str  # protocol (SPEC 2) | later (SPEC 4) | recipe (`RECIPE_ROWS`)
    config: str  # the configuration it is beside (`config_keys`); "" for a recipe row

    @property
    def source(self) -> str:
        """The short citation, e.g. "Cui et al. 2019"."""
        return self.reference.split(",")[0]


def published_rows(config: str, reference: str, method: str, by_ratio: Mapping[float, float],
                   *, profile: str = "exp", accuracy: bool = True, test_selected: bool = False,
                   kind: str = "later") -> list[Published]:
    """One row per ratio, from published accuracies (%), or errors when not `accuracy`."""
    return [Published(method, profile, ratio, round(100.0 - value, 2) if accuracy else value,
                      reference, test_selected, kind, config)
            for ratio, value in by_ratio.items()]


def _spec2(config: str, reference: str, method: str, profile: str,
           by_ratio: Mapping[float, float]) -> list[Published]:
    # Cao et al.'s code (kaidic/LDAM-DRW) reports the epoch with the best test accuracy
    # (SPEC 4 lists that codebase among those that select on test)
    return published_rows(config, reference, method, by_ratio, profile=profile, accuracy=False,
                          test_selected=reference == CAO, kind="protocol")


# SPEC 2, first table: Cui et al. 2019 (exp profile, ratios 200 .. 1).
_CUI_RATIOS = (200.0, 100.0, 50.0, 20.0, 10.0, 1.0)
_LATER_WANG = WANG + ", mean over seeds, github.com/wang22ti/DDC"
PUBLISHED: tuple[Published, ...] = (
    *_spec2("ce", CUI, "softmax CE", "exp",
            dict(zip(_CUI_RATIOS, (34.32, 29.64, 25.19, 17.77, 13.61, 6.61)))),
    *_spec2("focal", CUI, "focal γ=1", "exp",
            dict(zip(_CUI_RATIOS, (34.71, 29.62, 23.29, 17.24, 13.34, 6.60)))),
    *_spec2("cb", CUI, "class-balanced, best variant (β=0.9999)", "exp",
            dict(zip(_CUI_RATIOS, (31.11, 25.43, 20.73, 15.64, 12.51, 6.36)))),
    # SPEC 2, Cao et al. 2019: LT-100 / LT-10 (exp) and step-100 / step-10.
    *_spec2("ce", CAO, "ERM", "exp", {100.0: 29.64, 10.0: 13.61}),
    *_spec2("ce", CAO, "ERM", "step", {100.0: 36.70, 10.0: 17.50}),
    *_spec2("cb-focal", CAO, "CB focal", "exp", {100.0: 25.43, 10.0: 12.90}),
    *_spec2("cb-focal", CAO, "CB focal", "step", {100.0: 39.73, 10.0: 16.54}),
    *_spec2("ldam", CAO, "LDAM", "exp", {100.0: 26.65, 10.0: 13.04}),
    *_spec2("ldam", CAO, "LDAM", "step", {100.0: 33.42, 10.0: 15.00}),
    *_spec2("ldam-drw", CAO, "LDAM-DRW", "exp", {100.0: 22.97, 10.0: 11.84}),
    *_spec2("ldam-drw", CAO, "LDAM-DRW", "step", {100.0: 23.08, 10.0: 12.19}),
    # SPEC 4's table (accuracy, exp profile): LT-100 / LT-10
    *published_rows("ce", _LATER_WANG, "CE, 200 epochs, wd 2e-4", {100.0: 71.25, 10.0: 86.74}),
    *published_rows("ce", MENON, "plain CE", {100.0: 71.36}),
    *published_rows("ldam-drw", _LATER_WANG, "LDAM-DRW, 200 epochs, wd 2e-4",
                    {100.0: 77.97, 10.0: 87.96}),
    *published_rows("vs", _LATER_WANG, "VS loss, tuned weight decay", {100.0: 81.62, 10.0: 89.10}),
    *published_rows("la", MENON, "logit-adjusted loss (τ=1)", {100.0: 77.89}),
    *published_rows("posthoc", MENON, "post-hoc logit adjustment (τ=1)", {100.0: 77.32}),
    *published_rows("two-stage", ZHONG, "MiSLAS (mixup + label-aware smoothing, two stages)",
                    {100.0: 82.5, 10.0: 90.0}, test_selected=True),
)

# The protocol of SPEC 2 as run params (dotted config keys, ARCHITECTURE.md "Training").
PROTOCOL: dict[str, object] = {
    "model.name": "resnet32", "optim.epochs": 200, "optim.batch_size": 128, "optim.lr": 0.1,
    "optim.momentum": 0.9, "optim.warmup": 5, "optim.steps": [160, 180],
    "optim.decay": [0.01, 0.01], "optim.weight_decay": 2e-4, "data.augment": True,
    # none of the modern recipe (issue 19); a run from before these keys had none of it
    "optim.sam_rho": 0.0, "optim.schedule": "step", "data.cutout": 0, "data.mixup_alpha": 0.0,
    "data.cutmix_alpha": 0.0, "loss.smoothing": 0.0,
}
PROTOCOL_WORDS = ("resnet32, 200 epochs, batch 128, lr 0.1, warm-up 5, x0.01 at 160 and 180, "
                  "weight decay 2e-4")  # for captions and notes


def _parse(text: object) -> object:
    """A logged param string back to a value: "0.1" -> 0.1, "[160, 180]" -> [160, 180]."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _same(value: object, wanted: object) -> bool:
    if isinstance(wanted, bool) or isinstance(value, bool):
        return value == wanted
    if isinstance(wanted, (int, float)) and isinstance(value, (int, float)):
        return math.isclose(float(value), float(wanted), rel_tol=1e-9)
    if isinstance(wanted, list):
        values = value if isinstance(value, (list, tuple)) else [value] * len(wanted)
        return len(values) == len(wanted) and all(_same(v, w) for v, w in zip(values, wanted))
    return value == wanted


def param_matches(key: str, text: object, wanted: object) -> bool:
    """Whether a run's logged param `text` for `key` is `wanted`; a key added later
    (`config.later_defaults`) that the run never logged (None) counts as its default."""
    value = _parse(text)
    if value is None:
        value = later_defaults().get(key)
    return _same(value, wanted)


def protocol_gaps(params: Mapping[str, object]) -> list[str]:
    """The SPEC 2 protocol settings a run's params differ from; [] when it follows it.

        protocol_gaps({"optim.epochs": "50", ...})   # ["optim.epochs=50 (protocol: 200)", ...]
    """
    gaps = []
    for key, wanted in PROTOCOL.items():
        value = _parse(params.get(key))
        if key == "optim.decay" and isinstance(value, (int, float)):
            value = [value] * len(PROTOCOL["optim.steps"])  # one factor for every step
        if not param_matches(key, value, wanted):
            gaps.append(f"{key}={params.get(key)} (protocol: {wanted})")
    head = params.get("model.classifier")
    if params.get("loss.name") == "ldam" and resolve_classifier(head, "ldam") != "normed":
        # Cao et al.'s LDAM numbers come from their cosine head
        gaps.append(f"model.classifier={head or 'linear'} (protocol for LDAM: normed)")
    return gaps


def is_mislas(params: Mapping[str, object]) -> bool:
    """A second stage that re-trains with label-aware smoothing, as MiSLAS's does."""
    return (params.get("optim.train") == "classifier"
            and params.get("loss.smoothing") == "label-aware")


def mislas_gaps(first_stage_gaps: Sequence[str], first_stage_mixup: object) -> list[str]:
    """The protocol gaps of a MiSLAS second stage's first stage: its mixup is MiSLAS's recipe
    (Zhong et al. 2021), not a gap; a first stage without it is one."""
    gaps = [g for g in first_stage_gaps if not g.startswith("data.mixup_alpha=")]
    if not (number(first_stage_mixup) or 0.0) > 0:
        gaps.append(f"data.mixup_alpha={first_stage_mixup} in the first stage (MiSLAS: mixup)")
    return gaps


def config_keys(params: Mapping[str, object]) -> set[str]:
    """The `Published.config` rows a configuration (its logged loss params) is compared with;
    class-balanced rows match only beta = 0.9999, the beta behind those numbers."""
    loss, beta = str(params.get("loss.name")), number(params.get("loss.beta")) or 0.0
    tau = number(params.get("loss.tau"))
    tau = 1.0 if tau is None else tau  # a run from before `loss.tau`: its default
    focal = loss in ("focal", "sigmoid-focal")
    if params.get("optim.train") == "classifier":  # a second stage: MiSLAS's only when it
        # smooths label-aware (its first stage's mixup: `mislas_gaps`); cRT has no row
        return {"two-stage"} if is_mislas(params) else set()
    if number(params.get("loss.drw_epoch")) is not None and beta != 0:
        # Cao et al.'s DRW re-weights with beta = 0.9999; with beta = 0 the weights are all
        # ones and the run is the loss without DRW (below)
        return {"ldam-drw"} if loss == "ldam" and math.isclose(beta, CB_BETA) else set()
    # losses that reduce to another one: VS with gamma = 0 (Delta_c = 1) is the
    # logit-adjusted loss, which at tau = 0 is plain CE
    if loss == "vs" and number(params.get("loss.gamma")) == 0:
        loss = "la"
    if loss == "la" and tau == 0:
        loss = "ce"
    if math.isclose(beta, CB_BETA) and loss in ("ce", "focal", "sigmoid", "sigmoid-focal"):
        return {"cb", "cb-focal"} if focal else {"cb"}
    if beta != 0:
        return set()
    if focal and number(params.get("loss.gamma")) == 1:
        # Cui et al.'s focal baseline is Lin et al.'s sigmoid form (Sec. 4); the softmax
        # form is the write-up's: both are placed beside that row
        return {"focal"}
    # balanced softmax is the logit-adjusted loss at tau = 1 (Ren et al. 2020; SPEC 4)
    if loss == "balanced-softmax" or (loss == "la" and math.isclose(tau, 1.0)):
        return {"la"}
    return {loss} & {"ce", "ldam", "vs"}


def published_for(configs: Collection[str], profile: str, ratio: float) -> list[Published]:
    """The published numbers of these `config_keys` at this imbalance; [] if none. A ratio
    of 1 is the balanced set whatever the profile."""
    return [p for p in PUBLISHED if p.config in configs and math.isclose(p.ratio, ratio)
            and (p.profile == profile or ratio == 1)]


# ---- the modern recipes (issue 19) ---------------------------------------------------------
# SPEC 4's numbers for SAM and the stronger augmentation, as accuracy in the sources. A group
# of runs sits beside a row only when every run has every one of the row's settings: the
# numbers depend on the tuned rho and weight decay, so near misses are not compared. Both
# sources keep the epoch with the best *test* accuracy (`best_acc1` in their
# `cifar_train_sam.py`): optimistic next to cifarctl's, which selects on validation or takes
# the last epoch.

RANGWANI = ("Rangwani et al. 2022, Escaping Saddle Points for Effective Generalization on "
            "Class-Imbalanced Data (NeurIPS); val-iisc/Saddle-LongTail README and run.sh "
            "(CIFAR-10 LT-100, ResNet-32, 200 epochs, SAM rho 0.5 / 0.8); best test epoch")
RECIPE_WANG = (WANG + "; wang22ti/DDC README (mean +- std over seeds) and bash_script.sh "
               "(ResNet-32, 400 epochs, tuned rho and weight decay, CIFAR10Policy + Cutout 16 "
               "as their `--randaug 1`); best test epoch")

# The 200-epoch protocol of SPEC 2 (Cao et al.'s code, which both build on).
_SPEC2 = {"model.name": "resnet32", "optim.batch_size": 128, "optim.lr": 0.1,
          "optim.momentum": 0.9, "optim.decay": [0.01, 0.01], "data.imbalance_type": "exp",
          "optim.schedule": "step", "data.mixup_alpha": 0.0, "data.cutmix_alpha": 0.0,
          "loss.smoothing": 0.0}
_RANGWANI = {**_SPEC2, "optim.epochs": 200, "optim.warmup": 5, "optim.steps": [160, 180],
             "optim.weight_decay": 2e-4, "data.augment": True, "data.cutout": 0,
             "loss.beta": 0.9999, "loss.drw_epoch": 160}
# DDC scales the protocol to 400 epochs (decay at 320 and 360, DRW at 320). Its warm-up
# (`adjust_learning_rate`: lr * epoch / 5 for epochs 1..10) overshoots to 2 lr at epoch 10,
# which no cifarctl schedule reproduces, so the warm-up is not a setting of these rows.
_WANG = {**_SPEC2, "optim.epochs": 400, "optim.steps": [320, 360], "data.augment": "autoaugment",
         "data.cutout": 16}
_LDAM = {"loss.name": "ldam", "model.classifier": "normed", "loss.max_m": 0.5, "loss.s": 30.0}
_LDAM_DRW_400 = {**_WANG, **_LDAM, "loss.beta": 0.9999, "loss.drw_epoch": 320,
                 "optim.sam_rho": 0.4}
_CE_400 = {**_WANG, "loss.name": "ce", "loss.beta": 0.0, "loss.drw_epoch": None,
           "optim.sam_rho": 0.1, "optim.weight_decay": 1e-4}


def _row(reference: str, method: str, ratio: float, accuracy: float,
         settings: Mapping[str, object]) -> tuple[Published, dict[str, object]]:
    (row,) = published_rows("", reference, method, {ratio: accuracy}, test_selected=True,
                            kind="recipe")
    return row, {**settings, "data.imbalance": ratio}


RECIPE_ROWS: tuple[tuple[Published, dict[str, object]], ...] = (
    _row(RANGWANI, "CE-DRW + SAM (ρ=0.5)", 100.0, 80.6,
         {**_RANGWANI, "loss.name": "ce", "optim.sam_rho": 0.5}),
    _row(RANGWANI, "LDAM-DRW + SAM (ρ=0.8)", 100.0, 81.9,
         {**_RANGWANI, **_LDAM, "optim.sam_rho": 0.8}),
    _row(RECIPE_WANG, "LDAM-DRW, 400 epochs, SAM ρ=0.4, wd 5e-5, AutoAug + Cutout",
         100.0, 86.15, {**_LDAM_DRW_400, "optim.weight_decay": 5e-5}),
    _row(RECIPE_WANG, "LDAM-DRW, 400 epochs, SAM ρ=0.4, wd 1e-5, AutoAug + Cutout",
         10.0, 91.17, {**_LDAM_DRW_400, "optim.weight_decay": 1e-5}),
    _row(RECIPE_WANG, "CE, 400 epochs, SAM ρ=0.1, wd 1e-4, AutoAug + Cutout", 100.0,
         79.75, _CE_400),
    _row(RECIPE_WANG, "CE, 400 epochs, SAM ρ=0.1, wd 1e-4, AutoAug + Cutout", 10.0,
         90.79, _CE_400),
)
# every param a recipe row reads, for `tables.literature_table` to fetch once
RECIPE_KEYS: tuple[str, ...] = tuple(sorted({k for _, settings in RECIPE_ROWS for k in settings}))


def recipe_published(runs: Sequence[Mapping[str, object]]) -> list[Published]:
    """The recipe rows every one of `runs` (their logged params) follows; [] if none."""
    # the head a run trained, as `auto` resolves it (normed for LDAM)
    runs = [{**run, "model.classifier": resolve_classifier(
        run.get("model.classifier"), str(run.get("loss.name")))} for run in runs]
    return [published for published, settings in RECIPE_ROWS
            if runs and all(param_matches(key, run.get(key), wanted)
                            for run in runs for key, wanted in settings.items())]
