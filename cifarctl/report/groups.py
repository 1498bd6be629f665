"""Which runs are seeds of one configuration, in what order, and what to call it.

    columns = default_columns(frame)                 # every param but the seed and bookkeeping
    frame = link_stages(frame, columns)              # run.init_from: run id -> "CE" (its label)
    groups = make_groups(frame, columns)             # one Group per configuration
    groups[0].label                                  # "CE", "CB-focal β=0.999", "LDAM-DRW", ...

Runs are replicates when they differ only by `run.seed` and by settings that do not change
results (run name, experiment, device, torch.compile). Labels read like the write-up's
tables and name only what varies: the imbalance appears when runs of several ratios are
compared, a learning rate when two learning rates are.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cifarctl.errors import UsageError, did_you_mean
from cifarctl.report.recipe_words import policies_compared, recipe_words

if TYPE_CHECKING:
    import pandas as pd

SEED_KEY = "run.seed"
SEED_COLUMNS = (f"params.{SEED_KEY}", "tags.seed")  # --by these would pool configurations
# Keys whose value never changes a run's numbers: the seed makes replicates, the rest is
# bookkeeping (ARCHITECTURE.md, "Training": every config key is a param).
NON_RESULT_KEYS = frozenset({"run.seed", "run.run_name", "run.experiment", "run.device",
                             "run.compile"})
# The content hash of the data a run trained on (a tag, `cifarctl.training.record.run_tags`):
# runs of one `data.dataset` spec whose data was regenerated or re-imported in between are
# not seeds of one configuration (`split_by_data`).
DATA_KEY = "tags.dataset_fingerprint"
# Display and sort order: what a comparison is "at" first, then the loss, then the rest.
CONTEXT_KEYS = ("data.dataset", DATA_KEY, "model.name", "data.imbalance_type", "data.imbalance")
LEAD_KEYS = (*CONTEXT_KEYS, "loss.name", "loss.drw_epoch", "loss.beta", "loss.gamma")
MISSING = "—"  # a param some runs lack (runs from other tools, older cifarctl versions)

LOSS_LABELS = {"ce": "CE", "focal": "focal", "sigmoid": "sigmoid CE",
               "sigmoid-focal": "sigmoid focal", "ldam": "LDAM", "hybrid": "CE+focal hybrid",
               "la": "LA", "balanced-softmax": "balanced softmax", "vs": "VS"}
LOSS_ORDER = tuple(LOSS_LABELS)
# loss params that only some losses read (cifarctl.losses.build_loss); others ignore them
LOSS_PARAM_USERS = {"loss.gamma": {"focal", "sigmoid-focal", "hybrid", "vs"},
                    "loss.alpha": {"hybrid"}, "loss.max_m": {"ldam"}, "loss.s": {"ldam"},
                    "loss.tau": {"la", "vs"}}
GREEK = {"loss.beta": "β", "loss.gamma": "γ", "loss.alpha": "α", "loss.tau": "τ"}


def param(column: str) -> str:
    return column.removeprefix("params.")


def number(value: object) -> float | None:
    """A param string as a float ("0.999" -> 0.999); None for text, "None" or missing."""
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def key_frame(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """`frame[columns]` as strings, `MISSING` where a run lacks the value."""
    keys = frame[list(columns)]
    return keys.astype(object).where(keys.notna(), MISSING).astype(str)


def ignored_as_missing(keyed: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """`keyed` with each loss param that a run's loss does not read set to `MISSING`: `la`
    runs that differ only in `loss.gamma` are seeds of one configuration, not two rows."""
    loss = frame.get("params.loss.name")
    if loss is None:
        return keyed
    for key, users in LOSS_PARAM_USERS.items():
        if f"params.{key}" in keyed:
            keyed.loc[~loss.isin(users), f"params.{key}"] = MISSING
    return keyed


def default_columns(frame: pd.DataFrame) -> list[str]:
    """Every `params.*` column some run has a value in (a sweep parent's `grid.*` come only
    from runs left out), except `NON_RESULT_KEYS`, lead keys first."""
    keys = [c for c in frame.columns if c.startswith("params.")
            and param(c) not in NON_RESULT_KEYS and frame[c].notna().any()]
    return sorted(keys, key=_column_order)


def _column_order(column: str) -> tuple[int, str]:
    key = param(column)
    return (LEAD_KEYS.index(key), "") if key in LEAD_KEYS else (len(LEAD_KEYS), key)


def resolve_columns(by: str, frame: pd.DataFrame) -> list[str]:
    """`--by "loss.name,beta"` -> `["params.loss.name", "params.loss.beta"]`: config keys may
    drop a unique section (`beta`); `params.X` and `tags.X` name any column."""
    from cifarctl.config import resolve_key

    columns = []
    for token in (t.strip() for t in by.split(",")):
        if not token:
            continue
        if token.startswith(("params.", "tags.")):
            column = token
        else:
            try:
                column = f"params.{resolve_key(token)}"
            except UsageError:
                column = f"params.{token}"
        if column not in frame:
            known = [param(c) for c in frame.columns if c.startswith("params.")]
            raise UsageError(f"--by {token}: no run has {column!r}"
                             f"{did_you_mean(token.removeprefix('params.'), known)}; use config "
                             f"keys such as loss.name,loss.beta or params.<key> / tags.<key>")
        if column in SEED_COLUMNS:  # the rows would each hold one seed: no mean, no interval
            raise UsageError(f"--by {token}: seeds are what each row averages over (mean ± 95 % "
                             f"CI across them); group by what differs between configurations, "
                             f"e.g. --by loss.name,loss.beta")
        columns.append(column)
    if not columns:
        raise UsageError("--by needs at least one key, e.g. --by loss.name,loss.beta")
    return columns


def split_by_data(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[list[str], str | None]:
    """`columns` plus `DATA_KEY` when runs that `columns` would pool trained on different
    data (same spec, other contents), with a note saying so; else `columns` unchanged."""
    if DATA_KEY not in frame or DATA_KEY in columns:
        return list(columns), None
    known = frame[frame[DATA_KEY].notna()]
    if known.empty:
        return list(columns), None
    if columns:
        keyed = key_frame(known, columns)
        most = known[DATA_KEY].groupby([keyed[c] for c in columns]).nunique().max()
    else:
        most = known[DATA_KEY].nunique()
    if int(most) < 2:
        return list(columns), None
    return [*columns, DATA_KEY], (
        "some runs of one configuration trained on different data (the same data.dataset "
        "regenerated or re-imported in between: other dataset_fingerprint tags); they are "
        "reported apart, labelled 'data <fingerprint>'")


def key_words(key: str, value: str) -> str:
    """How a label names one setting: `lr=0.05`, or `data 1a2b3c4d` for the data's hash."""
    if key == DATA_KEY:
        return f"data {value[:8]}"
    return f"{key.split('.')[-1]}={value}"


@dataclass(eq=False)  # compared by identity: a DataFrame has no truth value
class Group:
    """The runs of one configuration (its seeds), with the values that define it."""

    values: dict[str, str]  # grouping column -> value
    rows: pd.DataFrame  # the group's runs, one row each
    label: str = ""
    _metrics: dict[str, list[float]] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def seeds(self) -> list[str]:
        """The replicate id of each run: its `run.seed` (a second stage's: its first stage's,
        `link_stages`), else its run id."""
        column = f"params.{SEED_KEY}"
        if column not in self.rows:
            return list(self.rows["run_id"])
        own = self.rows[column]
        if STAGE1_SEED in self.rows:
            own = self.rows[STAGE1_SEED].where(self.rows[STAGE1_SEED].notna(), own)
        return [run_id if isinstance(seed, float) or seed is None else str(seed)
                for seed, run_id in zip(own, self.rows["run_id"])]

    @functools.cached_property
    def params(self) -> dict[str, str]:
        """`{"loss.beta": "0.999", ...}` for the grouping params (no `params.` prefix)."""
        return {param(c): v for c, v in self.values.items()}

    def metric(self, name: str) -> list[float]:
        """`metrics.<name>` of each run as floats, NaN where a run lacks it (memoised)."""
        if name not in self._metrics:
            column = f"metrics.{name}"
            self._metrics[name] = ([float(v) for v in self.rows[column]] if column in self.rows
                                   else [math.nan] * len(self.rows))
        return self._metrics[name]


def _sort_key(group: Group, columns: Sequence[str]) -> tuple:
    out = []
    for column in columns:
        value, n = group.values[column], number(group.values[column])
        if param(column) == "loss.name" and value in LOSS_ORDER:
            n = LOSS_ORDER.index(value)
        elif param(column) == "loss.drw_epoch" and n is None:  # without DRW first
            n = -1
        out.append((0, n, "") if n is not None else (1, 0, value))
    return tuple(out)


def make_groups(frame: pd.DataFrame, columns: Sequence[str]) -> list[Group]:
    """Groups of runs sharing the values of `columns`, sorted context-first, labelled."""
    if not columns:
        groups = [Group({}, frame)]
    else:
        keyed = ignored_as_missing(key_frame(frame, columns), frame)
        by = list(columns) if len(columns) > 1 else columns[0]  # one key: scalar group keys
        groups = [Group(dict(zip(columns, key if isinstance(key, tuple) else (key,))),
                        frame.loc[index])
                  for key, index in keyed.groupby(by, sort=False).groups.items()]
    groups.sort(key=lambda g: _sort_key(g, columns))
    for group, label in zip(groups, unique_labels([g.params for g in groups])):
        group.label = label
    return groups


def varying_keys(configs: Sequence[Mapping[str, str]]) -> set[str]:
    """The keys whose value is not the same in every configuration."""
    keys = {k for c in configs for k in c}
    return {k for k in keys if len({c.get(k, MISSING) for c in configs}) > 1}


def imbalance_label(ratio: object, profile: object = "exp") -> str:
    """`LT-100` (exp profile), `step-10`, or `balanced` (ratio 1)."""
    r = number(ratio)
    if r is None:
        return f"imbalance {ratio}"
    if r == 1:
        return "balanced"
    return f"{'step' if profile == 'step' else 'LT'}-{r:g}"


def _loss_words(p: Mapping[str, str], varying: Collection[str]) -> str:
    loss = p["loss.name"]
    beta = number(p.get("loss.beta")) or 0.0
    drw = number(p.get("loss.drw_epoch"))
    name = LOSS_LABELS.get(loss, loss)
    if drw is not None:
        name += "-DRW"  # Cao et al. 2019: class-balanced weights from epoch drw on
    elif beta > 0:
        name = "CB-" + name  # Cui et al. 2019, the write-up's "CB-focal"
    words = [name]
    if beta > 0 and (drw is None or "loss.beta" in varying):
        words.append(f"β={beta:g}")
    if drw is not None and "loss.drw_epoch" in varying:
        words.append(f"from epoch {drw:g}")
    for key, users in LOSS_PARAM_USERS.items():
        value = number(p.get(key))
        if loss not in users or value is None:
            continue
        if key in varying or (key == "loss.gamma" and value != 1.0):  # γ=1: Cui's focal
            words.append(f"{GREEK.get(key, key.split('.')[1])}={value:g}")
    return " ".join(words)


def config_label(params: Mapping[str, str], varying: Collection[str]) -> str:
    """A configuration's name, e.g. "CB-focal β=0.999", "focal γ=2, LT-10", "LDAM-DRW".

    Loss settings are always named (β when class-balanced, γ when not 1); the imbalance,
    model, dataset and any other key only when they vary across the compared `params`.
    """
    from cifarctl.config import later_defaults

    parts = []
    # `+SAM`, `RandAug` (issue 19)
    after_loss, recipe_parts, handled = recipe_words(params, varying)
    if "loss.name" in params:
        parts.append(_loss_words(params, varying) + after_loss)
        handled |= {k for k in params if k.startswith("loss.")}
    elif after_loss:
        parts.append(after_loss.strip())
    parts += recipe_parts
    if {"data.imbalance", "data.imbalance_type"} & set(varying):
        parts.append(imbalance_label(params.get("data.imbalance"),
                                     params.get("data.imbalance_type", "exp")))
    handled |= {"data.imbalance", "data.imbalance_type"}
    later = later_defaults()  # a key added since, at its default: not named
    for key in sorted(set(varying) - handled, key=lambda k: _column_order(f"params.{k}")):
        value = params.get(key, MISSING)
        if key in later and value == str(later[key]):
            continue
        parts.append(value if key == "model.name" else key_words(key, value))
    return ", ".join(parts) or "all runs"


def label_varying(configs: Sequence[Mapping[str, str]]) -> set[str]:
    """The keys a label must name because they vary, judged among the configurations that
    use them: γ among focal-family losses, the DRW epoch (and β) among DRW configurations."""
    if not all("loss.name" in c for c in configs):  # loss keys are then plain key=value
        return varying_keys(configs) | policies_compared(configs)
    varying = {k for k in varying_keys(configs)
               if not k.startswith("loss.") and k not in ("model.classifier", DATA_KEY)}
    varying |= {key for key, users in LOSS_PARAM_USERS.items()
                if key in varying_keys([c for c in configs if c.get("loss.name") in users])}
    # the head follows the loss by default (normed for LDAM): name it only where one loss
    # was trained with two heads
    if any("model.classifier" in varying_keys([c for c in configs if c["loss.name"] == loss])
           for loss in {c["loss.name"] for c in configs}):
        varying.add("model.classifier")
    drw = [c for c in configs if number(c.get("loss.drw_epoch")) is not None]
    return (varying | (varying_keys(drw) & {"loss.drw_epoch", "loss.beta"})
            | policies_compared(configs))


def unique_labels(configs: Sequence[Mapping[str, str]]) -> list[str]:
    """`config_label` for each config; labels that collide get their differing keys added."""
    varying = label_varying(configs)
    labels = [config_label(c, varying) for c in configs]
    for label in set(labels):
        same = [i for i, other in enumerate(labels) if other == label]
        if len(same) < 2:
            continue
        differ = varying_keys([configs[i] for i in same])
        for i in same:
            extra = ", ".join(key_words(k, configs[i].get(k, MISSING)) if k == DATA_KEY
                              else f"{k}={configs[i].get(k, MISSING)}" for k in sorted(differ))
            labels[i] = f"{label} ({extra})"
    return labels


INIT_FROM = "params.run.init_from"
# a second stage's replicate is its first stage's seed: `train --init-from` without `--seed`
# gives every cRT seed 0, which would pair all of them with the baseline's seed 0 alone
STAGE1_SEED = "stage1_seed"


def link_stages(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """`frame` with each stage-2 run's `run.init_from` (its stage-1 run's id, different for
    every seed) given as that run's label among the runs that are no second stage, so the seeds
    of "cRT on CE" are one group, `init_from=CE` (issue 18); `run <id prefix>` for a stage-1
    run outside the report."""
    if INIT_FROM not in columns:
        return frame
    ids = frame[INIT_FROM]
    stage2 = ids.notna() & (ids.astype(str) != "None")
    if not stage2.any():
        return frame
    # labelled among the first stages alone: "CE", not "CE, epochs=200" beside a 10-epoch cRT
    first = make_groups(frame[~stage2], [c for c in columns if c != INIT_FROM])
    label_of = {run_id: g.label for g in first for run_id in g.rows["run_id"]}
    out = frame.copy()
    out.loc[stage2, INIT_FROM] = [label_of.get(r, f"run {str(r)[:8]}") for r in ids[stage2]]
    seed = f"params.{SEED_KEY}"
    if seed in frame:
        seed_of = dict(zip(frame["run_id"], frame[seed]))
        out[STAGE1_SEED] = [seed_of.get(r) if is_stage2 else None
                            for r, is_stage2 in zip(ids, stage2)]
    return out
