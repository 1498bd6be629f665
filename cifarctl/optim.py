"""SGD with two parameter groups: weight-decayed and not.

    no_decay = loss_fn.prepare_model(model)          # e.g. {"classifier.bias"} for sigmoid losses
    optimizer = build_optimizer(model, lr=0.1, momentum=0.9, weight_decay=2e-4, no_decay=no_decay)

Every parameter is decayed except those named in `no_decay`: the reference code
behind SPEC 2 (Cui et al.'s class-balanced-loss, Cao et al.'s LDAM-DRW) uses plain SGD
weight decay on all parameters, batch-norm scales and biases included, so the published
numbers assume it. Group 0 is decayed, group 1 is not; a schedule sets `lr` on both.
"""

from collections.abc import Collection

import torch
from torch import nn

from cifarctl.errors import UsageError


def build_optimizer(model: nn.Module, *, lr: float, momentum: float, weight_decay: float,
                    nesterov: bool = False,
                    no_decay: Collection[str] = frozenset()) -> torch.optim.SGD:
    """SGD over `model`'s trainable parameters; those named in `no_decay` get no weight decay.

    Names are as `model.named_parameters()` gives them (build the optimizer from the same
    object `prepare_model` saw, before wrapping it); an unknown name raises `UsageError`.
    """
    named = dict(model.named_parameters())
    unknown = sorted(set(no_decay) - set(named))
    if unknown:
        raise UsageError(f"no_decay names parameters the model does not have: {', '.join(unknown)}")
    trainable = {n: p for n, p in named.items() if p.requires_grad}
    groups = [{"params": [p for n, p in trainable.items() if n not in no_decay],
               "weight_decay": weight_decay},
              {"params": [p for n, p in trainable.items() if n in no_decay], "weight_decay": 0.0}]
    try:
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    except ValueError as err:  # torch's own range checks, e.g. "Invalid learning rate: -0.1"
        raise UsageError(f"optimizer: {err}") from None
