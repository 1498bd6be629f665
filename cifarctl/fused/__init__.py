"""Fused training: K runs of one architecture trained as one model (issue 8).

    from cifarctl.fused import check_fusable, group_key
    check_fusable(cfgs)                       # UsageError naming what differs, if anything
    from cifarctl.training import launch_fused
    outcomes = launch_fused(cfgs)             # one MLflow run per member, as `train` logs it

A ResNet-32 on 32x32 images leaves most of a GPU idle (launch- and memory-bound). HFTA (Wang
et al., MLSys 2021) fuses K such runs horizontally: their layers become one grouped
convolution, one BatchNorm, one batched matmul. Each member keeps its own seed, batches,
loss, hyper-parameters, checkpoint and MLflow run, and ends where it would have ended alone,
up to float rounding (the contract test: 1e-4 relative, float32, CPU). This module is
torch-free, so `sweep --dry-run` can plan fused groups without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cifarctl.errors import UsageError

# Config keys members of one fused group must share: one architecture and classifier head (as
# `auto` resolves it), the same steps in lockstep, one device and one (un)compiled graph.
# Everything else may differ per member, the modern recipe's dials included (issue 19).
SHARED_KEYS = ("model.name", "model.classifier", "data.dataset", "data.imbalance",
               "data.imbalance_type", "data.val_per_class", "data.augment", "optim.epochs",
               "optim.batch_size", "run.device", "run.compile")

UNFUSABLE = {"mymodel": "its dropout masks come from the global RNG, which fused members "
                        "share, so they would not train as they would alone"}


def unfusable(cfg: Any) -> str | None:
    """Why a run cannot train fused, or None: `UNFUSABLE` models and, from issue 18, a
    two-stage run and MaxNorm."""
    if cfg.model.name in UNFUSABLE:
        return f"{cfg.model.name} cannot be fused: {UNFUSABLE[cfg.model.name]}"
    if cfg.run.init_from is not None:
        return ("a two-stage run (run.init_from) cannot be fused: it starts from its own "
                "stage-1 checkpoint and may freeze its features")
    if cfg.optim.max_norm is not None:
        return ("a MaxNorm run (optim.max_norm) cannot be fused: it projects its classifier "
                "after each step of its own optimizer")
    return None


def group_key(cfg: Any) -> tuple | None:
    """What a run must share with others to be fused with them (`sweep` groups trials by it);
    None if it cannot be fused."""
    if unfusable(cfg) is not None:
        return None
    flat = {**cfg.to_flat(), "model.classifier": cfg.classifier}  # the head `auto` resolves to
    return tuple(flat[key] for key in SHARED_KEYS)


def check_fusable(cfgs: Sequence[Any]) -> None:
    """UsageError unless `cfgs` (two or more run configs) can train as one fused group."""
    if not cfgs:
        raise UsageError("fused training needs at least one run")
    name = cfgs[0].model.name
    for cfg in cfgs:
        reason = unfusable(cfg)
        if reason is not None and cfg.model.name == name:  # another model: said below
            raise UsageError(f"{reason}; train it unfused")
    first = group_key(cfgs[0])
    for cfg in cfgs[1:]:
        # an unfusable run here is of another model (the loop above), which the first of
        # SHARED_KEYS (model.name) reports
        key = group_key(cfg) or (cfg.model.name,)
        for shared, a, b in zip(SHARED_KEYS, first, key):
            if a != b:
                raise UsageError(f"fused runs must share {shared}, but one has {a!r} and "
                                 f"another {b!r}")
