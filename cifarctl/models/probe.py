"""The dead-unit probe (SPEC 1.1): per ReLU layer, the fraction of units that never fire.

    fractions = dead_relu_fractions(model, probe_x)  # {"layer1_0_relu1": tensor(0.0625), ...}

A unit is a channel of a conv feature map (a filter whose ReLU output is 0 at every position
of every input) or a neuron of a linear layer (0 on every input). The write-up argues such
units are rare in practice (SPEC 1.1); training logs `dead_relu_<layer>` to measure it.

Layer names are the ReLU's module path with dots turned into underscores
(`layer1.0.relu1` -> `layer1_0_relu1`, `relu6` stays), so `dead_relu_<layer>` is a valid
metric name anywhere. Values stay 0-dim tensors on the model's device: no host sync.
"""

import torch
from torch import nn


def dead_relu_fractions(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run `x` through `model` (eval mode, no grad, its mode restored after) and measure every
    `nn.ReLU` it passes; `{}` for a model without ReLUs (`twolayernet`)."""
    return {name: 1 - units.float().mean() for name, units in fired_units(model, x).items()}


def fired_units(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per ReLU layer (keyed as in `dead_relu_fractions`), which units fired on some input of
    `x`: a (units,) bool tensor. Fused models (issue 8) split it into their members' units.
    """
    fired: dict[str, torch.Tensor] = {}

    def record(path: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            active = output != 0                     # (N, C, H, W) or (N, F)
            if active.dim() > 2:
                active = active.flatten(2).any(-1)   # (N, C): fired somewhere in the map
            fired[path] = active.any(0)              # (C,): fired on some input

        return hook

    handles = [module.register_forward_hook(record(path))
               for path, module in model.named_modules() if isinstance(module, nn.ReLU)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {path.replace(".", "_"): units for path, units in fired.items()}  # layer names
