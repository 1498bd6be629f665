"""Config values' vocabularies and the rules between keys: what choosing a loss sets, what a
two-stage run needs.

    with_loss_presets(before, after, named)   # --loss vs without --gamma: VS's own gamma
    stage_checks(cfg)                          # [(holds, message), ...] for `validate`
    normalize_augment("crop-flip")             # True, as logged before policies existed

Torch-free, like the rest of `cifarctl.config`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cifarctl.config.sections import Check, RunConfig

# `data.sampler` -> q of Kang et al.'s p_j proportional to n_j^q (`data.samplers`)
SAMPLER_EXPONENTS = {"instance": 1.0, "class-balanced": 0.0, "sqrt": 0.5}
SAMPLERS = tuple(SAMPLER_EXPONENTS)

# `data.augment`: True / False keep their meaning (and their logged values, hence trial keys
# and report groups); the named policies run after crop + flip, as the references apply them
# (RandomCrop, RandomHorizontalFlip, policy: Cubuk et al.'s CIFAR code, Wang et al. 2023).
AUGMENT_ALIASES = {"crop-flip": True, "true": True, "none": False, "false": False}
AUGMENT_POLICIES = ("autoaugment", "randaugment")
RANDAUGMENT_BINS = 31  # torchvision's RandAugment(num_magnitude_bins=31): M in 0..30
SCHEDULES = ("step", "cosine")
LABEL_AWARE = "label-aware"  # `loss.smoothing`'s per-class form (MiSLAS)
SIGMOID_PREFIX = "sigmoid"  # every sigmoid loss's name and alias starts with it

# The published CIFAR-10-LT settings of a loss whose parameters share a key with another
# loss's: `loss.gamma` is focal's gamma (default 1) and VS's Delta exponent. Kini et al.
# 2021's code (orparask/VS-Loss, cifar_train.py: `--gamma 0.3 --tau 1.0`, ResNet-32 on
# CIFAR-10 at imb_factor 0.01) trains VS with gamma 0.3 and tau 1.
LOSS_PRESETS: dict[str, dict[str, Any]] = {"vs": {"loss.gamma": 0.3, "loss.tau": 1.0}}


def normalize_augment(value: bool | str) -> bool | str:
    """`crop-flip` -> True, `none` -> False, a policy name in lower case; others unchanged
    (the check then names them)."""
    if isinstance(value, bool):
        return value
    key = value.strip().lower()
    return AUGMENT_ALIASES.get(key, key)


def with_loss_presets(before: str, after: str, named: Collection[str]) -> dict[str, Any]:
    """The preset values a config takes when its loss changes from `before` to `after` in
    one set of overrides that does not name them (`named`: the resolved keys it sets).

    `cifarctl train --loss vs` trains VS with its published gamma, not focal's default 1;
    `--loss vs --gamma 0.2` (or a file, or a sweep entry that names `loss.gamma`) wins.
    """
    if before == after:
        return {}
    return {k: v for k, v in LOSS_PRESETS.get(after, {}).items() if k not in named}


def stage_checks(cfg: RunConfig) -> list[Check]:
    """What a two-stage run's keys need of each other (Kang et al. 2020's decoupling)."""
    stage2 = cfg.run.init_from is not None
    return [
        (cfg.run.init_from is None or bool(cfg.run.init_from.strip()),
         "run.init_from must be a run id, got an empty string"),
        (stage2 or cfg.optim.train == "all",
         "optim.train=classifier trains the classifier of a finished run on frozen features: "
         "give its id with --init-from RUN_ID (run.init_from)"),
        (stage2 or not cfg.model.reinit_classifier,
         "model.reinit_classifier starts a new classifier on a finished run's features: give "
         "its id with --init-from RUN_ID (run.init_from)"),
    ]
