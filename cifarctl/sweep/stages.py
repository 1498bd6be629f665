"""Sweeps in stages: a trial that starts from another trial's finished run (issue 18).

    include:                                   # in a spec, crossed with `grid: {seed: [0, 1]}`
      - {loss.name: ce}                                                 # stage 1
      - {optim.train: classifier, model.reinit_classifier: true,        # cRT on it
         data.sampler: class-balanced, run.init_from: {loss.name: ce}}

In a spec `run.init_from` may be a mapping naming the stage-1 trial by its values: that
trial has every value of the mapping, the same value on each grid axis the mapping does not
name (its seed, say), and no `run.init_from` of its own; exactly one trial must qualify.
The plan writes the reference as `trial:<its key>`, so a stage-2 trial's key depends on its
stage-1 trial's config and on no store (`resolve_run` swaps in the run id in the worker).
Torch- and MLflow-free at import, and free of `sweep.spec` (which calls it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cifarctl.config import RunConfig, apply_overrides, resolve_key
from cifarctl.errors import CifarctlError, UsageError
from cifarctl.names import TRIAL_KEY_TAG

KEY = "run.init_from"
PREFIX = "trial:"  # a planned config's reference to its stage-1 trial: trial:<key>
PLACEHOLDER = PREFIX + "?"  # what a stage-2 trial's config holds until its trial is found
READY = ("ok", "skipped")  # its stage-1 trial FINISHED (now, or in an earlier attempt)
WAITING = ("queued", "running")


def is_reference(value: Any) -> bool:
    """A spec's `run.init_from` mapping (a trial named by its values)."""
    return isinstance(value, Mapping)


def placeholder(combo: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's values with its stage-1 mapping set aside, for its config to validate."""
    return {k: PLACEHOLDER if k == KEY and is_reference(v) else v for k, v in combo.items()}


def referenced_key(cfg: RunConfig) -> str | None:
    """The key of the trial a planned config starts from (`trial:<key>`), or None."""
    value = cfg.run.init_from
    return value[len(PREFIX):] if value and value.startswith(PREFIX) else None


def _same_on(a: RunConfig, b: RunConfig, keys: Sequence[str]) -> bool:
    fa, fb = a.to_flat(), b.to_flat()
    return all(fa[k] == fb[k] for k in keys)


def resolve_references(combos: list[tuple[dict[str, Any], RunConfig]], *,
                       axes: Sequence[str], source: str, key: Callable[[RunConfig], str]
                       ) -> list[tuple[dict[str, Any], RunConfig]]:
    """`combos` (a trial's values, its config) with each stage-1 mapping resolved to
    `trial:<key>` in the config; UsageError naming the trial when none or several match."""
    first = [(c, cfg) for c, cfg in combos if not is_reference(c.get(KEY))]
    out = []
    for combo, cfg in combos:
        wanted = combo.get(KEY)
        if not is_reference(wanted):
            out.append((combo, cfg))
            continue
        shown = "{" + ", ".join(f"{k}={v!r}" for k, v in combo.items()) + "}"
        if not wanted:
            raise UsageError(f"{source}: trial {shown}: run.init_from names the stage-1 trial "
                             f"by its values, e.g. {{loss.name: ce}}; got an empty mapping")
        try:
            named = {resolve_key(str(k)) for k in wanted}
            same = [k for k in axes if k not in named]
            keys = {key(c) for _, c in first if apply_overrides(c, dict(wanted)) == c
                    and _same_on(c, cfg, same)}
        except UsageError as err:
            raise UsageError(f"{source}: trial {shown}: run.init_from: {err}") from None
        if len(keys) != 1:
            found = "no trial" if not keys else f"{len(keys)} trials"
            raise UsageError(f"{source}: trial {shown}: run.init_from matches {found} of the "
                             f"spec (with the same {', '.join(same) or 'values'}); name exactly "
                             f"one stage-1 trial by its values")
        out.append((combo, apply_overrides(cfg, {KEY: PREFIX + keys.pop()})))
    return out


def check_sampled(trials: Sequence[Any], source: str) -> None:
    """UsageError when a random subset keeps a stage-2 trial but not its stage-1 trial."""
    kept = {t.key for t in trials}
    for trial in trials:
        wanted = referenced_key(trial.config)
        if wanted is not None and wanted not in kept:
            raise UsageError(f"{source}: random leaves out trial {wanted}, which trial "
                             f"{trial.key} starts from; drop random or the stage-2 trials")


# ---- the scheduler --------------------------------------------------------------------------

def take_ready(pending: list[list[Any]], by_key: Mapping[str, Any]
               ) -> tuple[list[Any] | None, list[Any]]:
    """(the first pending group whose trials' stage-1 trials FINISHED, or None; the trials
    whose stage-1 trial ended otherwise, to be "not run"), both removed from `pending`."""
    blocked: list[Any] = []
    for group in list(pending):
        deps = [by_key[k] for k in (referenced_key(s.trial.config) for s in group) if k]
        if any(d.status not in READY + WAITING for d in deps):
            pending.remove(group)
            blocked += group
        elif all(d.status in READY for d in deps):
            pending.remove(group)
            return group, blocked
    return None, blocked


def blocked_message(state: Any, by_key: Mapping[str, Any]) -> str:
    wanted = by_key[referenced_key(state.trial.config)]
    return (f"not started: its stage-1 trial {wanted.trial.key} ended {wanted.status}; run the "
            f"sweep again once that trial has finished")


# ---- the worker -------------------------------------------------------------------------------

def resolve_run(cfg: RunConfig, tracking_uri: str) -> RunConfig:
    """`cfg` with its `trial:<key>` reference swapped for that trial's latest FINISHED run id
    in the sweep's experiment (which the run then records); CifarctlError when there is none."""
    wanted = referenced_key(cfg)
    if wanted is None:
        return cfg
    from cifarctl.tracking.runstore import open_store

    runs = open_store(tracking_uri).find_runs(
        cfg.run.experiment, f"attributes.status = 'FINISHED' and tags.`{TRIAL_KEY_TAG}` = "
                            f"'{wanted}'", order_by=["attributes.start_time DESC"])
    if not runs:
        raise CifarctlError(f"its stage-1 trial {wanted} has no FINISHED run in experiment "
                            f"{cfg.run.experiment!r}")
    return apply_overrides(cfg, {KEY: runs[0].run_id})


def as_planned(saved: RunConfig, planned: RunConfig) -> RunConfig:
    """A stage-2 trial's saved config (holding its stage-1 run id) with the plan's
    reference back, so its trial key can be checked on resume."""
    if referenced_key(planned) is None:
        return saved
    return apply_overrides(saved, {KEY: planned.run.init_from})
