"""Config files: YAML in the native and the assignment dialects, saved configs, `--set`.

    cfg = load_config("experiments/resnet32-cb-focal.yaml", {"seed": 1})
    cfg = config_from_dict(state.config)               # a checkpoint's saved config
    parse_set_option(["optim.steps=[40, 45]"])          # {"optim.steps": [40, 45]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cifarctl.config.keys import apply_overrides
from cifarctl.config.sections import SECTIONS, SWEEP_ONLY_KEYS, RunConfig, resolve_classifier
from cifarctl.errors import UsageError, did_you_mean

# ---- YAML: native and assignment dialects ---------------------------------------------------

# The write-up's keys (CS7643 A2 configs, SPEC 1.3) -> ours. Section names do not matter in
# that dialect; its files put e.g. `save_best` under `data`.
ASSIGNMENT_KEYS: dict[str, str] = {
    "batch_size": "optim.batch_size", "learning_rate": "optim.lr", "reg": "optim.weight_decay",
    "epochs": "optim.epochs", "steps": "optim.steps", "warmup": "optim.warmup",
    "momentum": "optim.momentum", "gamma": "loss.gamma", "beta": "loss.beta",
    "model": "model.name", "save_best": "run.save_best", "imbalance": "data.imbalance",
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
        if key not in SECTIONS:
            flat[key] = value  # an unsectioned unique key (`seed: 1`), or a typo
        elif isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif value is not None:  # None: an empty section (`optim:` with nothing under it)
            raise UsageError(f"section {key!r} must be a mapping of keys (e.g. {key}: "
                             f"{{...}}), got {type(value).__name__}")
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
    """Defaults <- YAML file (either dialect) <- overrides, validated once.

    The file and the overrides are two layers, as a sweep's base and its entries: a loss the
    overrides choose takes its presets (`rules.LOSS_PRESETS`) unless they name those keys,
    so `--config logged.yaml --loss vs` trains what a sweep entry `loss.name: vs` does."""
    flat: dict[str, Any] = {}
    if path is not None:
        doc = read_yaml(path)
        if doc is None:  # an empty file is more likely a mistake than a wish for the defaults
            raise UsageError(f"{path} is empty (no settings); give the config you meant, or "
                             f"drop --config to train with the defaults")
        flat = config_overrides_from_mapping(doc, source=str(path))
    return apply_overrides(apply_overrides(RunConfig(), flat, check=False), overrides or {})


def config_from_dict(doc: dict[str, Any]) -> RunConfig:
    """Rebuild a config from `to_dict()` output (checkpoints, saved config.yaml). A dict saved
    before `model.classifier` existed reads as the `linear` head those runs trained."""
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
