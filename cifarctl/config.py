"""The run configuration: typed, validated once, logged verbatim (STYLE principle 2).

    cfg = load_config("experiments/resnet32-ce.yaml", overrides={"loss.beta": 0.999})
    cfg.optim.lr, cfg.to_flat()["loss.beta"]

Five sections: `model`, `data`, `optim`, `loss`, `run`. Every field has a default with its
unit or reason (`help` below, which is also what `cifarctl train --help` and the README show).
Two YAML dialects load into it: the native one (the sections above) and the assignment
style of the write-up (`Train` / `network` / `data` / `loss` with `batch_size`,
`learning_rate`, `reg`, `loss_type`, ...), so researchers can bring their files (SPEC 1.3).
Overrides (`--set`, CLI flags, sweep axes) use dotted keys; a field name that is unique
across sections may drop its section (`seed`, `beta`, `epochs`).

This module is torch-free: the CLI validates a config before anything heavy is imported.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarctl.errors import UsageError, did_you_mean


def _f(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field carrying its help text (shown by `--help` and the README)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class ModelSection:
    name: str = _f("resnet32", "architecture, one of {models}")
    classifier: str = _f("auto", "final layer: `linear`, `normed` (cosine classifier of Cao et "
                         "al.'s LDAM code) or `auto` (normed for `ldam`, linear otherwise)")


@dataclass
class DataSection:
    dataset: str = _f("cifar10", "`cifar10` (downloaded once), `synthetic`, or a path to a "
                      "directory / .tar.gz of CIFAR batches or image folders")
    imbalance: float = _f(1.0, "imbalance ratio n_max/n_min of the training set; 1 = balanced "
                          "(Cui et al. 2019)")
    imbalance_type: str = _f("exp", "long-tail profile: `exp` (Cui et al.) or `step`")
    val_per_class: int | None = _f(None, "images per class held out for model selection, before "
                                   "the long-tail subsampling; default 500 (balanced) or 0 "
                                   "(long-tailed, so the published counts hold)")
    augment: bool = _f(True, "random crop (4-pixel padding) + horizontal flip, the published "
                       "protocol (Cui et al., Cao et al.)")


@dataclass
class OptimSection:
    epochs: int = _f(200, "training epochs (published protocol: 200)")
    batch_size: int = _f(128, "images per SGD step")
    lr: float = _f(0.1, "peak learning rate, reached after the warm-up")
    momentum: float = _f(0.9, "SGD momentum")
    nesterov: bool = _f(False, "Nesterov momentum")
    weight_decay: float = _f(2e-4, "L2 weight decay (`reg` in the assignment); published: 2e-4")
    warmup: int = _f(5, "epochs of linear learning-rate warm-up (published: 5); 0 = none")
    steps: list[int] = _f([160, 180], "epochs at which the learning rate is multiplied by "
                          "`decay` (published: 160, 180)")
    decay: float | list[float] = _f(0.1, "factor applied at each step, or one factor per step "
                                    "(the published protocol: [0.01, 0.01])")


@dataclass
class LossSection:
    name: str = _f("ce", "loss, one of {losses}")
    beta: float = _f(0.0, "class-balanced weighting (Cui et al. 2019) in [0, 1); 0 = unweighted")
    gamma: float = _f(1.0, "focal-loss focusing parameter; 0 = cross-entropy")
    drw_epoch: int | None = _f(None, "deferred re-weighting (Cao et al. 2019): unweighted until "
                               "this epoch, class-balanced from it; none = weighted throughout")
    alpha: float = _f(0.5, "hybrid loss CE + (1 - alpha) * focal")
    max_m: float = _f(0.5, "LDAM: largest margin")
    s: float = _f(30.0, "LDAM: logit scale")


@dataclass
class RunSection:
    seed: int = _f(0, "seed for initialisation, data order, augmentation and subset choice")
    device: str = _f("auto", "`auto` (CUDA when available), `cpu` or `cuda`")
    compile: bool = _f(False, "torch.compile the model (worth it on CUDA: about 5% on the "
                       "CPU, after a minute of compiling)")
    save_best: bool = _f(True, "keep the checkpoint with the best `select_metric` (validation, "
                         "never test); without a validation split the final epoch is kept")
    select_metric: str = _f("val_acc", "metric that picks the best epoch: val_acc or val_loss")
    experiment: str = _f("cifarctl", "MLflow experiment name")
    run_name: str | None = _f(None, "MLflow run name; default says what the run is, e.g. "
                              "resnet32-focal-b0.999-lt100-s0")


# A sweep spec's top-level keys (`cifarctl.sweep.spec.TOP_KEYS`) that no run config has:
# a spec given as --config is recognised by them.
SWEEP_ONLY_KEYS = ("grid", "base", "include", "exclude", "random")

SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "data": DataSection,
    "optim": OptimSection,
    "loss": LossSection,
    "run": RunSection,
}


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict, as written to `config.yaml` and reloaded by `load_config`."""
        return dataclasses.asdict(self)

    def to_flat(self) -> dict[str, Any]:
        """`{"optim.lr": 0.1, ...}`: the MLflow params of a run."""
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() for k, v in sec.items()}

    @property
    def classifier(self) -> str:
        """The head `model.classifier` resolves to: `linear` or `normed`.

        `auto` follows Cao et al.'s reference code (kaidic/LDAM-DRW): LDAM's margins and
        scale s = 30 are meant for cosine logits, every other loss gets a linear layer.
        """
        return resolve_classifier(self.model.classifier, self.loss.name)

    @property
    def logit_scale(self) -> float:
        """What the training loss multiplies the model's logits by before its softmax: LDAM's
        `loss.s`, else 1. Evaluation scales by it too, so validation/test cross-entropy and
        calibration describe the softmax the run was trained with (an LDAM model's cosine
        logits alone would give every class nearly the same probability)."""
        return self.loss.s if self.loss.name == "ldam" else 1.0

    @property
    def lr_decay_factors(self) -> list[float]:
        """One multiplicative factor per entry of `optim.steps`."""
        decay = self.optim.decay
        return list(decay) if isinstance(decay, list) else [decay] * len(self.optim.steps)

    def warnings(self) -> list[str]:
        """Settings that validate but are unlikely to be meant (`schedule_warnings`); the CLI
        prints them as `warning:` lines before training."""
        from cifarctl.schedule import schedule_warnings

        o = self.optim
        return schedule_warnings(epochs=o.epochs, warmup=o.warmup, milestones=o.steps)


def default_classifier(loss: str) -> str:
    """The head `model.classifier: auto` gives a run of loss `loss`."""
    return "normed" if loss == "ldam" else "linear"


def resolve_classifier(logged: str | None, loss: str) -> str:
    """The head a run of `loss` trained, from its `model.classifier` value: `auto` as it
    resolves, None (a run or checkpoint from before the key existed) as the `linear` head
    every run had then, `linear` / `normed` as they are. Configs, checkpoints and the
    report's run params all read heads through this one rule."""
    if logged is None:
        return "linear"
    return default_classifier(loss) if logged == "auto" else logged


def field_help() -> list[tuple[str, Any, str]]:
    """`[("optim.lr", 0.1, "peak learning rate ..."), ...]` for help screens and docs."""
    from cifarctl.losses import LOSS_NAMES  # both registries are torch-free
    from cifarctl.models import list_models

    names = {"{models}": ", ".join(list_models()), "{losses}": ", ".join(LOSS_NAMES)}
    rows = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
                else f.default
            text = f.metadata["help"]
            for placeholder, value in names.items():
                text = text.replace(placeholder, value)
            rows.append((f"{section}.{f.name}", default, text))
    return rows


def _all_keys() -> list[str]:
    return [f"{section}.{f.name}" for section, cls in SECTIONS.items()
            for f in dataclasses.fields(cls)]


def resolve_key(key: str) -> str:
    """`"beta"` -> `"loss.beta"`; `"optim.lr"` stays; unknown keys fail with a did-you-mean."""
    keys = _all_keys()
    if key in keys:
        return key
    matches = [k for k in keys if k.split(".", 1)[1] == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"config key '{key}' is ambiguous: write one of {', '.join(matches)}")
    hint = did_you_mean(key, keys + [k.split(".", 1)[1] for k in keys])
    raise UsageError(f"unknown config key '{key}'{hint}; see `cifarctl train --help`")


# ---- values: coercion to the declared types ------------------------------------------------

def _field_type(key: str) -> Any:
    section, name = key.split(".", 1)
    hints = typing.get_type_hints(SECTIONS[section])
    return hints[name]


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Turn a YAML/CLI value into `tp`, or fail with one line naming the key and the type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
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
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise UsageError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise UsageError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UsageError(f"{key} must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in this module


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of `cfg` with `{"loss.beta": 0.99, "seed": 1}` applied, then validated."""
    new = RunConfig(**{s: dataclasses.replace(getattr(cfg, s)) for s in SECTIONS})
    for raw_key, value in overrides.items():
        key = resolve_key(raw_key)
        section, name = key.split(".", 1)
        setattr(getattr(new, section), name, _coerce(key, value, _field_type(key)))
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
    o, d, lo, r = cfg.optim, cfg.data, cfg.loss, cfg.run
    checks: list[tuple[bool, str]] = [
        (o.epochs >= 1, f"optim.epochs must be >= 1, got {o.epochs}"),
        (o.batch_size >= 1, f"optim.batch_size must be >= 1, got {o.batch_size}"),
        (o.lr > 0 and math.isfinite(o.lr), f"optim.lr must be > 0, got {o.lr}"),
        (0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum}"),
        (o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}"),
        (o.warmup >= 0, f"optim.warmup must be >= 0 epochs, got {o.warmup}"),
        (all(s >= 0 for s in o.steps), f"optim.steps must be epochs >= 0, got {o.steps}"),
        (all(a < b for a, b in zip(o.steps, o.steps[1:])),
         f"optim.steps must be strictly increasing, got {o.steps}"),
        (not isinstance(o.decay, list) or len(o.decay) == len(o.steps),
         f"optim.decay lists one factor per step: {len(o.steps)} steps but decay={o.decay}"),
        (all(0 < f <= 1 for f in cfg.lr_decay_factors),
         f"optim.decay factors must be in (0, 1], got {o.decay}"),
        (d.imbalance >= 1, f"data.imbalance must be >= 1 (1 = balanced), got {d.imbalance}"),
        (d.imbalance_type in ("exp", "step"),
         f"data.imbalance_type must be 'exp' or 'step', got {d.imbalance_type!r}"),
        (d.val_per_class is None or d.val_per_class >= 0,
         f"data.val_per_class must be >= 0, got {d.val_per_class}"),
        (0 <= lo.beta < 1, f"loss.beta must be in [0, 1) (beta = 1 makes every class weight "
                           f"0/0), got {lo.beta}"),
        (lo.gamma >= 0, f"loss.gamma must be >= 0, got {lo.gamma}"),
        (0 <= lo.alpha <= 1, f"loss.alpha must be in [0, 1], got {lo.alpha}"),
        (lo.drw_epoch is None or lo.drw_epoch >= 0,
         f"loss.drw_epoch must be >= 0, got {lo.drw_epoch}"),
        (lo.max_m > 0, f"loss.max_m must be > 0, got {lo.max_m}"),
        (lo.s > 0, f"loss.s must be > 0, got {lo.s}"),
        (r.device in ("auto", "cpu", "cuda") or r.device.startswith("cuda:"),
         f"run.device must be auto, cpu or cuda, got {r.device!r}"),
        (r.select_metric in ("val_acc", "val_loss"),
         f"run.select_metric must be val_acc or val_loss, got {r.select_metric!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
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
    if cfg.classifier == "normed" and cfg.loss.name.startswith("sigmoid"):
        raise UsageError(f"loss {cfg.loss.name} initialises the classifier's bias, and the "
                         f"normed classifier has none: use model.classifier=linear (or auto)")


# ---- YAML: native and assignment dialects ---------------------------------------------------

# The write-up's keys (CS7643 A2 configs, SPEC 1.3) -> ours. Section names do not matter in
# that dialect; its files put e.g. `save_best` under `data`.
ASSIGNMENT_KEYS: dict[str, str] = {
    "batch_size": "optim.batch_size",
    "learning_rate": "optim.lr",
    "reg": "optim.weight_decay",
    "epochs": "optim.epochs",
    "steps": "optim.steps",
    "warmup": "optim.warmup",
    "momentum": "optim.momentum",
    "gamma": "loss.gamma",
    "beta": "loss.beta",
    "model": "model.name",
    "save_best": "run.save_best",
    "imbalance": "data.imbalance",
    "loss_type": "loss.name",
}
# `imbalance: imbalance` in the assignment is its long-tailed set: exp profile, ratio 100.
ASSIGNMENT_IMBALANCE = {"regular": 1.0, "balanced": 1.0, "imbalance": 100.0}


def _is_assignment_style(doc: dict[str, Any]) -> bool:
    if {"Train", "network"} & doc.keys():
        return True
    if {"model", "optim", "run"} & doc.keys():  # sections only the native dialect has
        return False
    inner = {k for v in doc.values() if isinstance(v, dict) for k in v}
    if {"loss_type", "learning_rate", "reg", "save_best"} & inner:
        return True
    # `imbalance: imbalance` (or regular / balanced): the assignment's word, not a ratio
    words = [v.get("imbalance") for v in doc.values() if isinstance(v, dict)]
    return any(isinstance(w, str) and w.lower() in ASSIGNMENT_IMBALANCE for w in words)


def _flatten_assignment(doc: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, body in doc.items():
        if not isinstance(body, dict):
            raise UsageError(f"assignment-style config: section '{section}' must be a mapping")
        for key, value in body.items():
            if key not in ASSIGNMENT_KEYS:
                raise UsageError(f"unknown key '{section}.{key}' in assignment-style config"
                                 f"{did_you_mean(key, ASSIGNMENT_KEYS)}")
            if key == "imbalance" and isinstance(value, str):
                if value.lower() not in ASSIGNMENT_IMBALANCE:
                    raise UsageError(f"{section}.imbalance must be one of "
                                     f"{', '.join(ASSIGNMENT_IMBALANCE)} or a ratio, got {value!r}")
                value = ASSIGNMENT_IMBALANCE[value.lower()]
            if key == "loss_type" and isinstance(value, str):
                value = value.lower()
            flat[ASSIGNMENT_KEYS[key]] = value
    return flat


def _flatten_native(doc: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif key in SECTIONS and value is not None:
            raise UsageError(f"section {key!r} must be a mapping of keys (e.g. {key}: "
                             f"{{...}}), got {type(value).__name__}")
        elif key in SECTIONS:
            continue  # an empty section (`optim:` with nothing under it)
        else:
            flat[key] = value  # an unsectioned unique key (`seed: 1`), or a typo
    return flat


def config_overrides_from_mapping(doc: Any, *, source: str) -> dict[str, Any]:
    """Dotted overrides from a parsed YAML document of either dialect."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UsageError(f"{source}: a config must be a YAML mapping of sections")
    if "layers" in doc and not set(doc) & set(SECTIONS):  # `theory relu-linear --network`
        raise UsageError(f"{source} is a network file for `cifarctl theory relu-linear "
                         f"--network`, not a run config")
    sweep_keys = [k for k in SWEEP_ONLY_KEYS if k in doc]
    if sweep_keys:
        raise UsageError(f"{source} is a sweep spec (it has {', '.join(sweep_keys)}), not a "
                         f"run config: run it with `cifarctl sweep {source}`")
    return _flatten_assignment(doc) if _is_assignment_style(doc) else _flatten_native(doc)


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """Parse a YAML file, turning every I/O or syntax problem into one UsageError line."""
    import yaml

    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{p} is a folder; give the {what} (a .yaml file) itself")
    if not p.is_file():
        raise UsageError(f"{what} not found: {p}")
    try:
        return yaml.safe_load(p.read_text())
    except UnicodeDecodeError:
        raise UsageError(f"{p} is not a text file, so not a YAML {what}") from None
    except OSError as err:
        raise UsageError(f"cannot read {what} {p}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UsageError(f"{p}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None


def load_config(path: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults <- YAML file (either dialect) <- overrides, validated once."""
    flat: dict[str, Any] = {}
    if path is not None:
        flat.update(config_overrides_from_mapping(read_yaml(path), source=str(path)))
    flat.update(overrides or {})
    return apply_overrides(RunConfig(), flat)


def config_from_dict(doc: dict[str, Any]) -> RunConfig:
    """Rebuild a config from `to_dict()` output (checkpoints, saved config.yaml).

    A dict saved before `model.classifier` existed lacks it: those runs trained a linear
    head whatever the loss, so it reads as `linear` (not today's `auto`), and their
    checkpoints load, resume and evaluate as the models they are.
    """
    flat = _flatten_native(doc)
    if isinstance(doc.get("model"), dict) and "model.classifier" not in flat:
        flat["model.classifier"] = resolve_classifier(None, loss=flat.get("loss.name", ""))
    return apply_overrides(RunConfig(), flat)


def parse_set_option(items: list[str]) -> dict[str, Any]:
    """`["loss.beta=0.99", "optim.steps=[40, 45]"]` -> `{"loss.beta": 0.99, ...}` (YAML values)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects section.key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out
