"""Published top-1 errors of ResNet-32 on long-tailed CIFAR-10, as data with their sources.

    published_for(loss="ce", beta=0.0, gamma=1.0, drw=False, profile="exp", ratio=100)
    # [Published("Cui et al. 2019", "softmax CE", "exp", 100.0, 29.64), Published("Cao ...

The numbers are those SPEC 2 quotes. Runs are compared with them only when they follow the
same protocol (`PROTOCOL`): ResNet-32, 200 epochs, batch 128, SGD momentum 0.9, lr 0.1 with
a 5-epoch linear warm-up, x0.01 at epochs 160 and 180, weight decay 2e-4, crop + flip.
This module is torch- and pandas-free.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass

from cifarctl.config import later_defaults, resolve_classifier

CUI = ("Cui et al. 2019, Class-Balanced Loss Based on Effective Number of Samples (CVPR), "
       "long-tailed CIFAR-10 with ResNet-32")
CAO = ("Cao et al. 2019, Learning Imbalanced Datasets with Label-Distribution-Aware Margin "
       "Loss (NeurIPS), imbalanced CIFAR-10 with ResNet-32")
CB_BETA = 0.9999  # the beta of both papers' class-balanced CIFAR-10 numbers


@dataclass(frozen=True)
class Published:
    """One published number: top-1 error (%) of `method` at imbalance `ratio` (`profile`)."""

    source: str  # short citation, e.g. "Cui et al. 2019"
    method: str  # as the paper names it
    profile: str  # exp | step (ratio 1 is balanced: either)
    ratio: float
    error: float  # top-1 error in percent
    citation: str = ""  # the full reference (Cui's and Cao's rows: CUI, CAO)
    test_selected: bool = False  # the reference kept the epoch with the best test accuracy

    @property
    def reference(self) -> str:
        return self.citation or (CUI if self.source.startswith("Cui") else CAO)


def _rows(source: str, method: str, profile: str, by_ratio: Mapping[float, float]
          ) -> list[Published]:
    # Cao et al.'s code (kaidic/LDAM-DRW) reports the epoch with the best test accuracy
    # (SPEC 4 lists that codebase among those that select on test)
    return [Published(source, method, profile, ratio, err, test_selected=source.startswith("Cao"))
            for ratio, err in by_ratio.items()]


# SPEC 2, first table: Cui et al. 2019 (exp profile, ratios 200 .. 1).
_CUI_RATIOS = (200.0, 100.0, 50.0, 20.0, 10.0, 1.0)
PUBLISHED: tuple[Published, ...] = (
    *_rows("Cui et al. 2019", "softmax CE", "exp",
           dict(zip(_CUI_RATIOS, (34.32, 29.64, 25.19, 17.77, 13.61, 6.61)))),
    *_rows("Cui et al. 2019", "focal γ=1", "exp",
           dict(zip(_CUI_RATIOS, (34.71, 29.62, 23.29, 17.24, 13.34, 6.60)))),
    *_rows("Cui et al. 2019", "class-balanced, best variant (β=0.9999)", "exp",
           dict(zip(_CUI_RATIOS, (31.11, 25.43, 20.73, 15.64, 12.51, 6.36)))),
    # SPEC 2, Cao et al. 2019: LT-100 / LT-10 (exp) and step-100 / step-10.
    *_rows("Cao et al. 2019", "ERM", "exp", {100.0: 29.64, 10.0: 13.61}),
    *_rows("Cao et al. 2019", "ERM", "step", {100.0: 36.70, 10.0: 17.50}),
    *_rows("Cao et al. 2019", "CB focal", "exp", {100.0: 25.43, 10.0: 12.90}),
    *_rows("Cao et al. 2019", "CB focal", "step", {100.0: 39.73, 10.0: 16.54}),
    *_rows("Cao et al. 2019", "LDAM", "exp", {100.0: 26.65, 10.0: 13.04}),
    *_rows("Cao et al. 2019", "LDAM", "step", {100.0: 33.42, 10.0: 15.00}),
    *_rows("Cao et al. 2019", "LDAM-DRW", "exp", {100.0: 22.97, 10.0: 11.84}),
    *_rows("Cao et al. 2019", "LDAM-DRW", "step", {100.0: 23.08, 10.0: 12.19}),
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


def published_for(*, loss: str, beta: float, gamma: float, drw: bool, profile: str,
                  ratio: float) -> list[Published]:
    """The published numbers for this loss at this imbalance (any source); [] if none.

    Class-balanced rows match only beta = 0.9999, the beta behind those numbers; a ratio of
    1 is the balanced set whatever the profile.
    """
    if drw:
        methods = {"LDAM-DRW"} if loss == "ldam" else set()
    elif beta == 0 and loss == "ce":
        methods = {"softmax CE", "ERM"}
    elif beta == 0 and loss in ("focal", "sigmoid-focal") and gamma == 1:
        # Cui et al.'s focal baseline is Lin et al.'s sigmoid form (Sec. 4); the softmax
        # form is the write-up's: both are placed beside that row
        methods = {"focal γ=1"}
    elif beta == 0 and loss == "ldam":
        methods = {"LDAM"}
    elif math.isclose(beta, CB_BETA) and loss in ("ce", "focal", "sigmoid", "sigmoid-focal"):
        methods = {"class-balanced, best variant (β=0.9999)"}
        if loss in ("focal", "sigmoid-focal"):
            methods.add("CB focal")
    else:
        methods = set()
    return [p for p in PUBLISHED if p.method in methods and math.isclose(p.ratio, ratio)
            and (p.profile == profile or ratio == 1)]
