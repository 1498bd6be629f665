"""Config keys: their names, help, types; overrides applied, coerced and validated.

    resolve_key("beta")                               # 'loss.beta'
    cfg = apply_overrides(RunConfig(), {"seed": 1})   # a validated copy
    later_defaults()                                  # {'loss.tau': 1.0, ...}
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from cifarctl.config.rules import SIGMOID_PREFIX, normalize_augment, stage_checks, with_loss_presets
from cifarctl.config.sections import SECTIONS, LossSection, RunConfig
from cifarctl.errors import UsageError, did_you_mean


def _fields() -> list[tuple[str, dataclasses.Field]]:
    """Every config key (`"optim.lr"`) with its field, in section order."""
    return [(f"{section}.{f.name}", f) for section, cls in SECTIONS.items()
            for f in dataclasses.fields(cls)]


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def field_help() -> list[tuple[str, Any, str]]:
    """`[("optim.lr", 0.1, "peak learning rate ..."), ...]` for help screens and docs."""
    from cifarctl.losses import LOSS_NAMES  # both registries are torch-free
    from cifarctl.models import list_models

    models, losses = ", ".join(list_models()), ", ".join(LOSS_NAMES)
    return [(key, _default(f),
             f.metadata["help"].replace("{models}", models).replace("{losses}", losses))
            for key, f in _fields()]


@functools.lru_cache(maxsize=1)  # the report asks once per label; callers only read it
def later_defaults() -> Mapping[str, Any]:
    """`{key: default}` of the fields declared `later=True` (added after trial keys existed):
    left out of a trial key at their default, and read as their default from a run that
    never logged them. One shared mapping: do not change it."""
    return {key: _default(f) for key, f in _fields() if f.metadata.get("later")}


def resolve_key(key: str) -> str:
    """`"beta"` -> `"loss.beta"`; `"optim.lr"` stays; unknown keys fail with a did-you-mean."""
    keys = [k for k, _ in _fields()]
    if key in keys:
        return key
    matches = [k for k in keys if k.split(".", 1)[1] == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"config key '{key}' is ambiguous: write one of {', '.join(matches)}")
    hint = did_you_mean(key, keys + [k.split(".", 1)[1] for k in keys])
    raise UsageError(f"unknown config key '{key}'{hint}; see `cifarctl config keys`")


# ---- values: coercion to the declared types ------------------------------------------------

def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Turn a YAML/CLI value into `tp`, or fail with one line naming the key and the type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if (value is None or value == "None") and type(None) in options:
            return None  # "None": how MLflow shows a logged null, copied back with --set
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(key, value, option)
            except UsageError as err:
                errors.append(err)
        raise errors[-1]
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{key} must be a list, got {value!r}")
        return [_coerce(key, v, item_tp) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise UsageError(f"{key} must be true or false, got {value!r}")
    if tp in (int, float):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and (tp is float or isinstance(value, int) or value.is_integer()):
            return tp(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` as a string
            with contextlib.suppress(ValueError):
                return tp(value)
        raise UsageError(f"{key} must be {'an integer' if tp is int else 'a number'}, "
                         f"got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UsageError(f"{key} must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in this module


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any], *,
                    check: bool = True) -> RunConfig:
    """A copy of `cfg` with `{"loss.beta": 0.99, "seed": 1}` applied, then validated (unless
    `check` is off: a layer that more overrides complete, as `load_config`'s file)."""
    new = RunConfig(**{s: dataclasses.replace(getattr(cfg, s)) for s in SECTIONS})
    resolved = {resolve_key(raw_key): value for raw_key, value in overrides.items()}
    if "loss.name" in resolved:  # a loss chosen without its own settings gets its presets
        from cifarctl.losses import canonical_name

        after = canonical_name(str(resolved["loss.name"]))
        resolved |= with_loss_presets(cfg.loss.name, after, resolved)
    for key, value in resolved.items():
        section, name = key.split(".", 1)
        tp = typing.get_type_hints(SECTIONS[section])[name]  # the declared type
        setattr(getattr(new, section), name, _coerce(key, value, tp))
    if check:
        validate(new)
    return new


def loss_section(**values: Any) -> LossSection:
    """A loss section from keyword values, coerced and validated as `--set loss.KEY=VALUE`
    would be: the one check of the loss parameters, for run configs and `build_loss` alike.

        loss_section(name="Focal", beta=0.999, gamma=2)   # LossSection(name='focal', ...)
    """
    return apply_overrides(RunConfig(), {f"loss.{k}": v for k, v in values.items()}).loss


# ---- validation: ranges and cross-field rules ----------------------------------------------

def validate(cfg: RunConfig) -> None:
    """Raise UsageError (exit 2) naming the first out-of-range value."""
    # the sections' ranges, in this order (the first failure is the one reported)
    checks = [c for section in (cfg.optim, cfg.data, cfg.loss, cfg.run)
              for c in section.checks()] + stage_checks(cfg)
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    # one spelling of the recipe's values: `crop-flip` as True and `none` as False (what such
    # runs logged before policies existed), names in lower case
    cfg.data.augment = normalize_augment(cfg.data.augment)
    if isinstance(cfg.loss.smoothing, str):
        cfg.loss.smoothing = cfg.loss.smoothing.strip().lower()
    for key, value in cfg.to_flat().items():  # inf passes every `>= 0`; nan passes none
        numbers = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise UsageError(f"{key} must be a finite number, got {value}")
    from cifarctl.losses import canonical_name as loss_name  # both registries are torch-free
    from cifarctl.models import HEADS
    from cifarctl.models import canonical_name as model_name

    cfg.model.name = model_name(cfg.model.name)
    cfg.loss.name = loss_name(cfg.loss.name)
    if cfg.model.classifier not in ("auto", *HEADS):
        raise UsageError(f"model.classifier must be auto, {', '.join(HEADS)}, got "
                         f"{cfg.model.classifier!r}")
    if cfg.classifier == "normed" and cfg.loss.name.startswith(SIGMOID_PREFIX):
        raise UsageError(f"loss {cfg.loss.name} initialises the classifier's bias, and the "
                         f"normed classifier has none: use model.classifier=linear (or auto)")
