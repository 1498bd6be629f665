"""Models by name: a torch-free registry over one module per architecture family.

    from cifarctl.models import create_model, list_models
    model = create_model("ResNet-32")        # same as "resnet32"; 464,154 parameters

`list_models()` and `canonical_name()` answer from the table below without importing torch
(the CLI's `--help` choices); `create_model` imports the family module on first use, as
timm's does. `dead_relu_fractions` (the dead-unit probe of SPEC 1.1) is imported lazily too.

Contracts every model keeps (ARCHITECTURE.md, "Models"): `model.classifier` is its final
`nn.Linear` (or the `heads.NormedLinear` put in its place); every ReLU site is its own
`nn.ReLU` module, so the probe can hook each one.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cifarctl.errors import UsageError, did_you_mean

if TYPE_CHECKING:
    from torch import nn

HEADS = ("linear", "normed")  # classifier heads (`cifarctl.models.heads`), torch-free here

# canonical name -> "family module:builder function" (SPEC 1.2). Names are lower case without
# separators, so "ResNet-32", "resnet_32" and "resnet32" all meet here (see `canonical_name`).
_MODELS: dict[str, str] = {
    "twolayernet": "simple:twolayernet",
    "vanillacnn": "simple:vanillacnn",
    "mymodel": "mymodel:mymodel",
    **{f"resnet{depth}": f"resnet:resnet{depth}" for depth in (20, 32, 44, 56, 110)},
}

# "module:function" of every builder the family modules mark with `register_model`; the tests
# check it equals the table's values, so a builder cannot exist without a name or vice versa.
_REGISTERED: set[str] = set()


def register_model(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Mark a family function as a model builder (it must also be listed in `_MODELS`)."""
    _REGISTERED.add(f"{builder.__module__.rpartition('.')[2]}:{builder.__name__}")
    return builder


def list_models() -> list[str]:
    """Canonical model names, simplest first: `["twolayernet", ..., "resnet110"]`."""
    return list(_MODELS)


def canonical_name(name: str) -> str:
    """`"ResNet-32"` -> `"resnet32"`: case, `-`, `_` and spaces do not matter; `UsageError`
    with the closest known name for an unknown one."""
    key = name.lower().replace("-", "").replace("_", "").replace(" ", "")
    if key in _MODELS:
        return key
    raise UsageError(f"unknown model '{name}'{did_you_mean(key, _MODELS)}; "
                     f"choose one of: {', '.join(_MODELS)}")


def create_model(name: str, num_classes: int = 10, classifier: str = "linear",
                 **overrides: Any) -> nn.Module:
    """Build a freshly initialised model by name.

        create_model("mymodel", dropout=0.5)      # overrides are the builder's keyword options
        create_model("resnet32", classifier="normed")   # cosine head (LDAM, Cao et al.)

    `classifier` is the final layer: `linear` (`nn.Linear`) or `normed` (`heads.NormedLinear`,
    drawn from the RNG after the rest of the model). An unknown override is a `UsageError`.
    """
    canonical = canonical_name(name)
    module_name, _, function_name = _MODELS[canonical].partition(":")
    builder = getattr(importlib.import_module(f"{__name__}.{module_name}"), function_name)
    options = [p for p in inspect.signature(builder).parameters if p != "num_classes"]
    unknown = sorted(set(overrides) - set(options))
    if unknown:
        raise UsageError(f"model '{canonical}' has no option {', '.join(unknown)} "
                         f"(it accepts: {', '.join(options) or 'no options'})")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise UsageError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if classifier not in HEADS:
        raise UsageError(f"unknown classifier {classifier!r}; choose one of: {', '.join(HEADS)}")
    model = builder(num_classes=num_classes, **overrides)
    if classifier == "normed":
        from cifarctl.models.heads import NormedLinear

        model.classifier = NormedLinear.replacing(model.classifier)
    return model


def __getattr__(name: str) -> Any:
    # PEP 562: the probe needs torch, so `import cifarctl.models` must not import it eagerly.
    if name == "dead_relu_fractions":
        from cifarctl.models.probe import dead_relu_fractions

        return dead_relu_fractions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
