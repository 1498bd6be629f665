"""The assignment's two baselines (SPEC 1.2): a two-layer sigmoid MLP and a one-layer CNN.

    model = create_model("vanillacnn")       # 58,826 parameters

Both are `nn.Sequential`s with named layers, so `model.classifier` is the final `nn.Linear`
and the probe's layer names read like the table in SPEC 1.2.
"""

from collections import OrderedDict

from torch import nn

from cifarctl.errors import UsageError
from cifarctl.models import register_model


def _check_width(option: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"model option {option} must be an integer >= 1, got {value!r}")


@register_model
def twolayernet(num_classes: int = 10, hidden: int = 256) -> nn.Sequential:
    """flatten 3072 -> Linear `hidden` -> sigmoid -> Linear (789,258 parameters at the defaults).

    It has no ReLU, so the dead-unit probe returns an empty dict for it.
    """
    _check_width("hidden", hidden)
    return nn.Sequential(OrderedDict(
        flatten=nn.Flatten(),                        # (N, 3, 32, 32) -> (N, 3072)
        fc1=nn.Linear(3 * 32 * 32, hidden),
        sigmoid=nn.Sigmoid(),
        classifier=nn.Linear(hidden, num_classes),
    ))


@register_model
def vanillacnn(num_classes: int = 10, channels: int = 32) -> nn.Sequential:
    """Conv 3->32 7x7/s1/p0 -> ReLU -> maxpool 2/2 -> Linear 5408 -> 10 (58,826 parameters)."""
    _check_width("channels", channels)
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(3, channels, kernel_size=7),  # (N, 32, 26, 26): 32 - 7 + 1 = 26
        relu=nn.ReLU(),
        pool=nn.MaxPool2d(2),                        # (N, 32, 13, 13)
        flatten=nn.Flatten(),                        # (N, 5408)
        classifier=nn.Linear(channels * 13 * 13, num_classes),
    ))
