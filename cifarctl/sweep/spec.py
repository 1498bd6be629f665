"""Sweep specs: a base config, grid axes, include/exclude lists and a random subset -> trials.

    spec = load_spec("experiments/beta-sweep.yaml", overrides={"optim.epochs": 2})
    plan = expand(spec)
    plan.trials[0].key, plan.trials[0].overrides   # 'c0ffee123456', {'loss.beta': 0.9, ...}

A spec is YAML with these top-level keys (all optional but one of `grid` / `include`):

    base: resnet32-cb-focal.yaml   # a config file of either dialect, relative to the spec,
                                   # or an inline mapping of sections; default: the defaults
    set: {optim.epochs: 100}       # dotted overrides applied to every trial
    experiment: beta-sweep         # MLflow experiment of the parent and its trials (default:
    name: beta-sweep               #   the spec's file name); name: the parent run's name
    grid:                          # axes, key -> non-empty list of values; trials = product
      loss.beta: [0.9, 0.99, 0.999]
      seed: [0, 1, 2]
    exclude:                       # drop each grid trial whose config has all these values
      - {loss.beta: 0.9, seed: 2}
    include:                       # add trials: an entry fixes the keys it names and is
      - {loss.name: ce, loss.beta: 0}   # crossed with every grid axis it does not name
    random: {n: 8, seed: 0}        # keep a seeded random subset of n trials

A trial may start from another trial's finished run: `run.init_from: {loss.name: ce}` names
that trial by its values (`stages`; the sweep runs it once that trial FINISHED).

Plan order: the grid product (axes as written, the last varying fastest) less the excluded
trials, then the include entries in order. Trials whose resolved configs are equal are merged
(the first stays). A trial's config is base <- `set` <- `--set` <- its own values, validated
exactly like `train`'s, so a bad value anywhere fails the whole spec before anything runs.

A trial's key (`trial_key`) is the same on every run and machine, so a re-run finds the
trials already done; a spec edited to expand to other trials is another sweep (another key).

This module is torch-free: `--dry-run` answers without loading torch or MLflow.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cifarctl.config import (
    SWEEP_ONLY_KEYS,
    RunConfig,
    apply_overrides,
    config_overrides_from_mapping,
    field_help,
    later_defaults,
    read_yaml,
    resolve_key,
)
from cifarctl.errors import UsageError, did_you_mean
from cifarctl.sweep.stages import check_sampled, is_reference, placeholder, resolve_references

TOP_KEYS = (*SWEEP_ONLY_KEYS, "set", "experiment", "name")
# Fields that say where or how fast a run goes, not what it computes: left out of the key.
KEY_IGNORES = ("run.experiment", "run.run_name", "run.device", "run.compile")
KEY_HEX = 12  # 48 bits: a collision among 10^4 trials has odds of about 2e-7
# List-valued config fields (`optim.steps`): a grid axis over them is a list of lists.
LIST_FIELDS = frozenset(key for key, default, _ in field_help() if isinstance(default, list))


@dataclass(frozen=True)
class Trial:
    """One configuration of a sweep."""

    index: int  # position in the plan, from 0
    key: str  # trial_key(config)
    overrides: dict[str, Any]  # what this trial sets itself: resolved key -> resolved value
    config: RunConfig


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, checked spec; `expand` turns it into trials."""

    source: str  # the spec file, for messages
    name: str  # the parent run's name
    experiment: str  # MLflow experiment of the parent and every trial
    base: RunConfig  # base <- set <- --set, validated
    grid: dict[str, list[Any]]  # resolved key -> values
    include: list[dict[str, Any]] = field(default_factory=list)
    exclude: list[dict[str, Any]] = field(default_factory=list)
    random: tuple[int, int] | None = None  # (n, seed)
    document: dict[str, Any] = field(default_factory=dict)  # as written, for the parent run


@dataclass(frozen=True)
class Plan:
    """The trials of a spec, in order, and the sweep's own key."""

    spec: SweepSpec
    trials: list[Trial]
    key: str  # sweep_key(trials): the parent run's identity
    merged: int = 0  # combinations dropped as equal to an earlier trial
    sampled_from: int | None = None  # trials before the random subset, if any


# ---- keys ---------------------------------------------------------------------------------

def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_HEX]


def trial_key(cfg: RunConfig) -> str:
    """The hash of `cfg`'s resolved values less those that do not change its results.

    `model.classifier` enters as the head it resolves to (`auto` and `normed` are one trial
    for LDAM), and not at all when that is `linear`: the key of every trial without a cosine
    head is what it was before the key existed, so earlier sweeps keep their finished trials.
    Fields added later (`config.later_defaults`) enter only when set away from their default.
    """
    later = later_defaults()
    flat = {k: v for k, v in cfg.to_flat().items()
            if k not in KEY_IGNORES and not (k in later and v == later[k])}
    del flat["model.classifier"]
    if cfg.classifier != "linear":
        flat["model.classifier"] = cfg.classifier
    return _digest(flat)


def sweep_key(trials: list[Trial]) -> str:
    """The key of a set of trials, whatever their order."""
    return _digest(sorted(t.key for t in trials))


def plan_json(plan: Plan) -> dict[str, Any]:
    """`{"trials": [{"key": ..., "overrides": {...}}, ...]}`: `--dry-run --json`'s output."""
    return {"trials": [{"key": t.key, "overrides": t.overrides} for t in plan.trials]}


# ---- parsing ------------------------------------------------------------------------------

def _resolved(mapping: dict[Any, Any], what: str, source: str) -> dict[str, Any]:
    """`{"seed": 1}` -> `{"run.seed": 1}`; a key given twice (also as an alias) is an error."""
    out: dict[str, Any] = {}
    for raw, value in mapping.items():
        try:
            key = resolve_key(str(raw))
        except UsageError as err:  # an unknown key: say where it is written
            raise UsageError(f"{source}: {what}: {err}") from None
        if key in out:
            raise UsageError(f"{source}: {what} names {key} twice")
        if key == "run.experiment":
            raise UsageError(f"{source}: {what} sets run.experiment; a sweep's trials share "
                             f"its experiment: set the spec's `experiment:` (or --experiment)")
        out[key] = value
    return out


def _mapping_list(doc: dict[str, Any], name: str, source: str) -> list[dict[str, Any]]:
    entries = doc.get(name) or []
    if not isinstance(entries, list):
        raise UsageError(f"{source}: {name} must be a list of mappings, e.g. "
                         f"[{{loss.name: ce, loss.beta: 0}}]")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry:
            raise UsageError(f"{source}: {name}[{i}] must be a non-empty mapping of config keys "
                             f"to values, got {entry!r}")
        out.append(_resolved(entry, f"{name}[{i}]", source))
    return out


def _keyed(doc: dict[str, Any], name: str, source: str, values: str = "values"
           ) -> dict[str, Any]:
    raw = doc.get(name) or {}
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: {name} must be a mapping of config keys to {values}")
    return _resolved(raw, name, source)


def _grid(doc: dict[str, Any], source: str) -> dict[str, list[Any]]:
    grid = _keyed(doc, "grid", source, "lists of values")
    for key, values in grid.items():
        if not isinstance(values, list):
            raise UsageError(f"{source}: grid axis {key} must be a list of values, got "
                             f"{values!r} (write [{values!r}] for one value)")
        if not values:
            raise UsageError(f"{source}: grid axis {key} is empty; give it at least one value "
                             f"or remove it")
        if key in LIST_FIELDS and not all(isinstance(v, list) for v in values):
            raise UsageError(f"{source}: grid axis {key} takes lists as values: write "
                             f"[{values!r}] for the one value {values!r}")
    return grid


def _random(doc: dict[str, Any], source: str) -> tuple[int, int] | None:
    raw = doc.get("random")
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"n", "seed"} or "n" not in raw:
        raise UsageError(f"{source}: random must be a mapping {{n: COUNT, seed: SEED}}, got "
                         f"{raw!r}")
    n, seed = raw["n"], raw.get("seed", 0)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UsageError(f"{source}: random.n must be an integer >= 1, got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UsageError(f"{source}: random.seed must be an integer, got {seed!r}")
    return n, seed


def _base(doc: dict[str, Any], source: str, root: Path) -> dict[str, Any]:
    base = doc.get("base")
    if base is None:
        return {}
    if isinstance(base, str):
        path = root / Path(base).expanduser()  # an absolute path replaces `root`
        if not path.is_file():
            raise UsageError(f"{source}: base config not found: {path} (a path is relative to "
                             f"the spec's folder)")
        return config_overrides_from_mapping(read_yaml(path), source=str(path))
    if isinstance(base, dict):
        return config_overrides_from_mapping(base, source=f"{source}: base")
    raise UsageError(f"{source}: base must be a config file name or a mapping of config "
                     f"sections, got {base!r}")


def _text(doc: dict[str, Any], name: str, default: str, source: str) -> str:
    value = doc.get(name, default)
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{source}: {name} must be a non-empty string, got {value!r}")
    return value.strip()


def parse_spec(doc: Any, *, source: str, root: Path, default_name: str,
               overrides: dict[str, Any] | None = None, experiment: str | None = None) -> SweepSpec:
    """Check a parsed spec document; `overrides` are `--set`, `experiment` is `--experiment`."""
    if not isinstance(doc, dict):
        raise UsageError(f"{source}: a sweep spec must be a YAML mapping with `grid:` and/or "
                         f"`include:`")
    for key in doc:
        if key not in TOP_KEYS:
            raise UsageError(f"{source}: unknown spec key '{key}'{did_you_mean(str(key), TOP_KEYS)}"
                             f"; a spec has {', '.join(TOP_KEYS)}")
    grid, include = _grid(doc, source), _mapping_list(doc, "include", source)
    exclude = _mapping_list(doc, "exclude", source)
    if not grid and not include:
        raise UsageError(f"{source}: the spec has no trials: give `grid:` axes or `include:` "
                         f"entries")
    fixed = _keyed(doc, "set", source)
    cli = _resolved(overrides or {}, "--set", source)
    varied = set(grid).union(*include)
    clash = sorted(varied & set(cli))
    if clash:
        raise UsageError(f"--set {clash[0]}: the sweep varies {clash[0]}; edit its grid or "
                         f"include entries in {source} instead")
    name = _text(doc, "name", default_name, source)
    experiment = experiment or _text(doc, "experiment", default_name, source)
    base_overrides = _base(doc, source, root)  # its errors name the spec already
    try:
        base = apply_overrides(RunConfig(), {**base_overrides, **fixed, **cli,
                                             "run.experiment": experiment})
    except UsageError as err:
        raise UsageError(f"{source}: base config: {err}") from None
    return SweepSpec(source=source, name=name, experiment=experiment, base=base, grid=grid,
                     include=include, exclude=exclude, random=_random(doc, source), document=doc)


def load_spec(path: str | Path, *, overrides: dict[str, Any] | None = None,
              experiment: str | None = None) -> SweepSpec:
    """Read and check a spec file (UsageError, exit 2, for anything wrong in it)."""
    path = Path(path)
    return parse_spec(read_yaml(path, "sweep spec"), source=str(path), root=path.parent,
                      default_name=path.stem, overrides=overrides, experiment=experiment)


# ---- expansion ----------------------------------------------------------------------------

def _product(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def _configure(spec: SweepSpec, combo: dict[str, Any]) -> RunConfig:
    try:  # a stage-1 trial named by its values is found later (`stages.resolve_references`)
        return apply_overrides(spec.base, placeholder(combo))
    except UsageError as err:
        shown = ", ".join(f"{k}={v!r}" for k, v in combo.items())
        raise UsageError(f"{spec.source}: trial {{{shown}}}: {err}") from None


def _matches(cfg: RunConfig, entry: dict[str, Any], spec: SweepSpec, what: str) -> bool:
    """True when `cfg` already has every value of `entry` (compared as resolved configs)."""
    try:
        return apply_overrides(cfg, entry) == cfg
    except UsageError as err:
        raise UsageError(f"{spec.source}: {what}: {err}") from None


def _sample(trials: list[Trial], n: int, seed: int, source: str) -> list[Trial]:
    """n trials ranked by sha256(seed:key): stable across machines and Python versions."""
    if n > len(trials):
        raise UsageError(f"{source}: random.n={n} but the spec has only {len(trials)} trials; "
                         f"lower n or drop random")
    def rank(t: Trial) -> str:
        return hashlib.sha256(f"{seed}:{t.key}".encode()).hexdigest()

    chosen = {t.key for t in sorted(trials, key=rank)[:n]}
    return [t for t in trials if t.key in chosen]


def expand(spec: SweepSpec) -> Plan:
    """The spec's trials: grid less exclude, plus include, merged, then the random subset."""
    combos: list[tuple[dict[str, Any], RunConfig]] = []
    for combo in _product(spec.grid) if spec.grid else []:  # no axes: only the includes
        cfg = _configure(spec, combo)
        if not any(_matches(cfg, e, spec, f"exclude[{i}]") for i, e in enumerate(spec.exclude)):
            combos.append((combo, cfg))
    for entry in spec.include:
        crossed = {k: v for k, v in spec.grid.items() if k not in entry}
        for combo in _product(crossed):
            combo = {**combo, **entry}
            combos.append((combo, _configure(spec, combo)))
    combos = resolve_references(combos, axes=list(spec.grid), source=spec.source, key=trial_key)
    unique: dict[str, tuple[dict[str, Any], RunConfig]] = {}
    for combo, cfg in combos:
        unique.setdefault(trial_key(cfg), (combo, cfg))
    if not unique:
        raise UsageError(f"{spec.source}: exclude removes every trial; nothing to run")
    trials: list[Trial] = []
    for key, (combo, cfg) in unique.items():
        flat = cfg.to_flat()
        overrides = {k: v if is_reference(v) else flat[k] for k, v in combo.items()}
        trials.append(Trial(len(trials), key, overrides, cfg))
    sampled_from = None
    if spec.random is not None:
        sampled_from = len(trials)
        trials = [replace(t, index=i)
                  for i, t in enumerate(_sample(trials, *spec.random, spec.source))]
        check_sampled(trials, spec.source)
    return Plan(spec, trials, sweep_key(trials), len(combos) - len(unique), sampled_from)
