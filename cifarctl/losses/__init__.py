"""Every loss, chosen by name: CE, focal, class-balanced, sigmoid, LDAM, DRW, hybrid, and the
logit-adjusted ones (la, balanced-softmax, vs).

    from cifarctl.losses import build_loss, loss_from_config
    loss_fn = build_loss("focal", train_counts, beta=0.999, gamma=2.0)
    loss_fn = loss_from_config(cfg.loss, train_counts)    # a run config's loss section
    loss = loss_fn(logits, targets)      # (N, C), (N,) -> scalar, sum_i w_{y_i} l_i / N

`LOSS_NAMES` and `canonical_name` answer without torch (the CLI lists the names in `--help`);
`build_loss`, `loss_from_config` and `cb_weights` import it on first use. The parameters
are the config's loss section (`cifarctl.config.LossSection`).
"""

import importlib
from typing import Any

from cifarctl.errors import UsageError, did_you_mean

LOSS_NAMES: tuple[str, ...] = ("ce", "focal", "sigmoid", "sigmoid-focal", "ldam", "hybrid",
                                "la", "balanced-softmax", "vs")

# other spellings -> names; the write-up writes "CE" and "Focal" (case never matters)
_ALIASES = {"cross-entropy": "ce", "crossentropy": "ce", "softmax": "ce", "sigmoid-ce": "sigmoid",
            "logit-adjusted": "la", "vector-scaling": "vs"}

# public name -> the module that defines it, imported on first access (PEP 562)
_LAZY = {"build_loss": "cifarctl.losses.factory", "loss_from_config": "cifarctl.losses.factory",
         "cb_weights": "cifarctl.losses.weights"}


def canonical_name(name: str) -> str:
    """`"Focal"` -> `"focal"`, `"sigmoid_focal"` -> `"sigmoid-focal"`; unknown -> `UsageError`."""
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    key = _ALIASES.get(key, key)
    if key in LOSS_NAMES:
        return key
    hint = did_you_mean(key, LOSS_NAMES)
    raise UsageError(f"unknown loss '{name}'{hint}; choose one of: {', '.join(LOSS_NAMES)}")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
