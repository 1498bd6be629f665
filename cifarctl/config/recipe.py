"""The modern recipe's config rules (issue 19): policy names, schedules, smoothing, their ranges.

    normalize_augment("crop-flip")     # True: the value logged and saved, as before policies
    recipe_optim_checks(cfg.optim)     # [(holds, message), ...] for `validate`

The recipe's fields live in `sections.py` (declared `later=True`), their rules here. Torch-free.
"""

from __future__ import annotations

from typing import Any

# `data.augment`: True / False keep their meaning (and their logged values, hence trial keys
# and report groups); the named policies run after crop + flip, as the references apply them
# (RandomCrop, RandomHorizontalFlip, policy: Cubuk et al.'s CIFAR code, Wang et al. 2023).
AUGMENT_ALIASES = {"crop-flip": True, "true": True, "none": False, "false": False}
AUGMENT_POLICIES = ("autoaugment", "randaugment")
RANDAUGMENT_BINS = 31  # torchvision's RandAugment(num_magnitude_bins=31): M in 0..30
SCHEDULES = ("step", "cosine")
LABEL_AWARE = "label-aware"  # `loss.smoothing`'s per-class form (MiSLAS)
SIGMOID_PREFIX = "sigmoid"  # every sigmoid loss's name and alias starts with it


def normalize_augment(value: bool | str) -> bool | str:
    """`crop-flip` -> True, `none` -> False, a policy name in lower case; others unchanged
    (the check then names them)."""
    if isinstance(value, bool):
        return value
    key = value.strip().lower()
    return AUGMENT_ALIASES.get(key, key)


def recipe_data_checks(data: Any) -> list[tuple[bool, str]]:
    """The ranges of `data.augment` and the policies', Cutout's and mixing's dials."""
    augment = normalize_augment(data.augment)
    return [
        (isinstance(augment, bool) or augment in AUGMENT_POLICIES,
         f"data.augment must be crop-flip (true), none (false), "
         f"{' or '.join(AUGMENT_POLICIES)}, got {data.augment!r}"),
        (data.randaugment_n >= 0, f"data.randaugment_n must be >= 0, got {data.randaugment_n}"),
        (0 <= data.randaugment_m < RANDAUGMENT_BINS,
         f"data.randaugment_m must be in 0..{RANDAUGMENT_BINS - 1}, got {data.randaugment_m}"),
        (data.cutout >= 0, f"data.cutout must be >= 0 pixels, got {data.cutout}"),
        (data.mixup_alpha >= 0, f"data.mixup_alpha must be >= 0, got {data.mixup_alpha}"),
        (data.cutmix_alpha >= 0, f"data.cutmix_alpha must be >= 0, got {data.cutmix_alpha}"),
        (0 <= data.mix_prob <= 1, f"data.mix_prob must be in [0, 1], got {data.mix_prob}"),
    ]


def recipe_optim_checks(optim: Any) -> list[tuple[bool, str]]:
    """The ranges of SAM's radius and the schedule."""
    return [
        (optim.sam_rho >= 0, f"optim.sam_rho must be >= 0 (0 = plain SGD), got {optim.sam_rho}"),
        (optim.schedule in SCHEDULES,
         f"optim.schedule must be {' or '.join(SCHEDULES)}, got {optim.schedule!r}"),
        (0 <= optim.min_lr <= optim.lr,
         f"optim.min_lr must be in [0, optim.lr={optim.lr:g}], got {optim.min_lr}"),
    ]


def recipe_loss_checks(loss: Any) -> list[tuple[bool, str]]:
    """Label smoothing: a factor in [0, 1) or `label-aware` with bounds in [0, 1), and only
    for the softmax losses (a sigmoid loss has no distribution over classes to smooth)."""
    smoothing = loss.smoothing
    label_aware = isinstance(smoothing, str) and smoothing.strip().lower() == LABEL_AWARE
    on = label_aware or (isinstance(smoothing, (int, float)) and smoothing != 0)
    return [
        (label_aware or (isinstance(smoothing, (int, float)) and 0 <= smoothing < 1),
         f"loss.smoothing must be in [0, 1) or {LABEL_AWARE}, got {smoothing!r}"),
        (all(0 <= eps < 1 for eps in (loss.smoothing_head, loss.smoothing_tail)),
         f"loss.smoothing_head and loss.smoothing_tail must be in [0, 1), got "
         f"{loss.smoothing_head}, {loss.smoothing_tail}"),
        (not (on and loss.name.strip().lower().startswith(SIGMOID_PREFIX)),
         f"loss.smoothing applies to the softmax losses, not {loss.name}: set loss.smoothing=0 "
         f"or choose a softmax loss"),
    ]


def normalize_recipe(cfg: Any) -> None:
    """Spell a checked config's recipe values one way: `crop-flip` as True and `none` as
    False (what such runs logged before policies existed), names in lower case."""
    cfg.data.augment = normalize_augment(cfg.data.augment)
    if isinstance(cfg.loss.smoothing, str):
        cfg.loss.smoothing = cfg.loss.smoothing.strip().lower()
