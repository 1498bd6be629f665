"""The report's three tables as plain data, from grouped runs (issue 6).

    rows = per_class_table(groups, num_classes)        # 1: the write-up's table, over seeds
    comparisons, notes = head_to_head(groups, num_classes, parse_baseline(DEFAULT_BASELINE))
    literature, note = literature_table(groups)        # 3: beside Cui et al. / Cao et al.

Every number is a `stats.Summary` (mean, 95 % CI, n) over a configuration's runs, or a
`stats.TTest` for a difference. Values are fractions (0.689), as logged; renderers scale.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cifarctl.errors import UsageError
from cifarctl.evaluation import posthoc
from cifarctl.evaluation.scores import SHOT_GROUPS, group_accuracies, shot_groups
from cifarctl.names import CLASS_ACC_AT_BEST, TEST_ACC_AT_BEST
from cifarctl.report import DEFAULT_BASELINE, literature, stats
from cifarctl.report.groups import CONTEXT_KEYS, LOSS_PARAM_USERS, Group, number
from cifarctl.report.literature import RECIPE_KEYS, recipe_published
from cifarctl.report.selection import selection_rules

if TYPE_CHECKING:
    import pandas as pd

OVERALL = TEST_ACC_AT_BEST  # summary metrics at the best epoch (cifarctl.names)
CLASS_METRIC = CLASS_ACC_AT_BEST
# `cifarctl eval` metrics shown in table 1 when the runs have them (ARCHITECTURE.md, "Eval")
EXTRA_METRICS = {"eval_ece": "ECE", "eval_mean_corruption_acc": "corruption acc"}
POSTHOC_TAU1 = f"eval_{posthoc.tau_name(1.0)}_test_acc"  # `eval --logit-adjust 1`: table 3's row


def class_counts(rows: pd.DataFrame) -> list[list[int] | None]:
    """Each run's training images per class, from its `class_counts` tag (None if absent)."""
    if "tags.class_counts" not in rows:
        return [None] * len(rows)
    out = []
    for text in rows["tags.class_counts"]:
        try:
            out.append([int(c) for c in str(text).split(",")])
        except ValueError:
            out.append(None)
    return out


def class_names(frame: pd.DataFrame, num_classes: int) -> list[str]:
    """Names from the runs' `class_names` tag when they all agree, else `class <i>`."""
    if "tags.class_names" in frame:
        names = {str(v) for v in frame["tags.class_names"].dropna()}
        if len(names) == 1:
            split = names.pop().split(",")
            if len(split) == num_classes:
                return split
    return [f"class {i}" for i in range(num_classes)]


def count_classes(frame: pd.DataFrame) -> int:
    """How many `test_acc_class_<i>_at_best` metrics each run has (UsageError if they differ:
    runs over datasets with different numbers of classes cannot share a table)."""
    pattern = re.compile(r"metrics\.test_acc_class_\d+_at_best")
    columns = [c for c in frame.columns if pattern.fullmatch(c)]
    per_run = set(frame[columns].notna().sum(axis=1)) if columns else {0}
    if len(per_run) > 1:
        raise UsageError(f"the runs have different numbers of classes ({sorted(per_run)}); "
                         f"report one dataset at a time, e.g. --filter "
                         f"\"params.data.dataset = 'cifar10'\"")
    return int(per_run.pop())


# ---- table 1: per-class accuracy ---------------------------------------------------------

@dataclass
class PerClassRow:
    """One configuration: overall, per-class and shot-group accuracy over its seeds."""

    label: str
    keys: dict[str, str]  # grouping param -> value
    run_ids: list[str]
    seeds: list[str]
    overall: stats.Summary
    classes: list[stats.Summary]
    shots: dict[str, stats.Summary | None]  # many / medium / few; None: no class in the group
    counts: list[int] | None  # training images per class (first run's)
    worst: int | None  # class with the lowest mean accuracy
    extras: dict[str, stats.Summary] = field(default_factory=dict)  # eval_* metrics
    selection: dict[str, int] = field(default_factory=dict)  # its runs' epoch rule -> runs

    @property
    def n(self) -> int:
        return self.overall.n


def per_class_row(group: Group, num_classes: int, extras: Sequence[str] = ()) -> PerClassRow:
    rows = group.rows
    per_class = [group.metric(CLASS_METRIC.format(i=i)) for i in range(num_classes)]
    counts = class_counts(rows)
    shot_values: dict[str, list[float]] = {name: [] for name in SHOT_GROUPS}
    for r, run_counts in enumerate(counts):
        if run_counts is None or len(run_counts) != num_classes:
            continue
        for name, value in group_accuracies([c[r] for c in per_class], run_counts).items():
            if value is not None:
                shot_values[name].append(value)
    classes = [stats.summarize(values) for values in per_class]
    means = [c.mean for c in classes]
    worst = min(range(num_classes), key=lambda i: means[i]) if num_classes and not all(
        math.isnan(m) for m in means) else None
    return PerClassRow(
        label=group.label, keys=group.params, run_ids=list(rows["run_id"]), seeds=group.seeds,
        overall=stats.summarize(group.metric(OVERALL)), classes=classes,
        shots={k: stats.summarize(v) if v else None for k, v in shot_values.items()},
        counts=next((c for c in counts if c is not None), None), worst=worst,
        extras={m: stats.summarize(group.metric(m)) for m in extras},
        selection=selection_rules(rows))


def _logged(group: Group, metric: str) -> bool:
    """Whether some run of `group` has `metric`."""
    return not all(math.isnan(v) for v in group.metric(metric))


def per_class_table(groups: Sequence[Group], num_classes: int) -> list[PerClassRow]:
    """Table 1, one row per group; eval_* columns for the metrics some run has, post-hoc
    accuracies (`eval --logit-adjust TAU`, Menon et al. 2021) by increasing tau."""
    taus: dict[str, float] = {}  # found once for all rows (per row: quadratic in groups)
    for group in groups:
        for column in group.rows.columns:
            match = posthoc.TEST_ACC.fullmatch(column.removeprefix("metrics."))
            if match and column.startswith("metrics.") and _logged(group, match.group(0)):
                taus[match.group(0)] = float(match.group(1))
    extras = [m for m in EXTRA_METRICS if any(_logged(g, m) for g in groups)]
    extras += sorted(taus, key=taus.__getitem__)
    return [per_class_row(g, num_classes, extras) for g in groups]


def extra_label(metric: str) -> str:
    """The column header of an eval_* metric of table 1 (`post-hoc LA τ=1`: a run's model
    with the training prior subtracted from its logits, never its test accuracy)."""
    if match := posthoc.TEST_ACC.fullmatch(metric):
        return f"post-hoc LA τ={float(match.group(1)):g}"
    return EXTRA_METRICS.get(metric) or metric


def shot_notes(rows: Sequence[PerClassRow]) -> list[str]:
    """Say which shot groups are empty (no class has that many training images) or unknown."""
    from cifarctl.evaluation.scores import SHOT_RULES

    notes = []
    if any(r.counts is None for r in rows):
        notes.append("many/medium/few need the `class_counts` tag of each run; runs without "
                     "it have no shot-group accuracy")
    counted = [r for r in rows if r.counts is not None]
    for name in SHOT_GROUPS:
        empty = [r.label for r in counted if not shot_groups(r.counts)[name]]
        if empty:
            where = "any configuration" if len(empty) == len(counted) else ", ".join(empty)
            notes.append(f"{name}-shot ({SHOT_RULES[name]}): no class qualifies in {where}")
    return notes


# ---- table 2: head-to-head against a baseline --------------------------------------------

@dataclass
class Comparison:
    """A configuration minus its baseline, overall and per class."""

    label: str
    baseline: str
    overall: stats.TTest
    classes: list[stats.TTest]
    verdict: str
    matched_seeds: list[str]  # seeds both have (the pairs of a paired test)


def parse_baseline(spec: str) -> dict[str, str]:
    """`"loss.name=ce,loss.beta=0"` -> `{"loss.name": "ce", "loss.beta": "0"}` (keys resolved)."""
    from cifarctl.config import resolve_key

    out = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--baseline expects key=value pairs, e.g. {DEFAULT_BASELINE!r}; "
                             f"got {item!r}")
        out[resolve_key(key.strip())] = value.strip()
    if not out:
        raise UsageError(f"--baseline expects key=value pairs, e.g. {DEFAULT_BASELINE!r}")
    return out


def plain_baseline(spec: Mapping[str, str], grouping: Sequence[str]) -> dict[str, str]:
    """The baseline `spec` plus, for each config key added later that the runs are grouped
    by, its default: plain CE is the baseline, not CE re-trained in a second stage or
    sampled class-balanced."""
    from cifarctl.config import later_defaults

    keys = {c.removeprefix("params.") for c in grouping}
    loss = spec.get("loss.name")  # a param its loss does not read is no part of it
    return {**{k: str(v) for k, v in later_defaults().items() if k in keys and k not in spec
               and loss in LOSS_PARAM_USERS.get(k, {loss})}, **spec}


def _equal(value: str | None, wanted: str) -> bool:
    a, b = number(value), number(wanted)
    if a is not None and b is not None:
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return str(value).lower() == wanted.lower()


def _by_seed(group: Group, values: Sequence[float]) -> dict[str, float]:
    """Seed -> value (the mean of runs sharing a seed, which `--by` can group together)."""
    collected: dict[str, list[float]] = {}
    for seed, value in zip(group.seeds, values):
        if not math.isnan(value):
            collected.setdefault(seed, []).append(value)
    return {s: stats.mean(v) for s, v in collected.items()}


def compare(a: Group, b: Group, metric: str) -> tuple[stats.TTest, list[str]]:
    """a - b on `metric`: paired over matching seeds (>= 2), else Welch, else what is possible."""
    va, vb = _by_seed(a, a.metric(metric)), _by_seed(b, b.metric(metric))
    common = sorted(set(va) & set(vb), key=lambda s: (number(s) is None, number(s) or 0, s))
    if len(common) >= 2 or (common and (len(va) < 2 or len(vb) < 2)):
        return stats.paired_t_test([va[s] for s in common], [vb[s] for s in common]), common
    return stats.welch_t_test(list(va.values()), list(vb.values())), common


def _closest(group: Group, candidates: Sequence[Group], spec: Mapping[str, str]) -> Group:
    def distance(c: Group) -> tuple[int, int]:
        differ = sum(1 for k, v in group.params.items() if k not in spec and
                     not _equal(c.params.get(k), v))
        return differ, -len(c.rows)

    return min(candidates, key=distance)


def head_to_head(groups: Sequence[Group], num_classes: int, spec: Mapping[str, str]
                 ) -> tuple[list[Comparison], list[str]]:
    """Table 2: each non-baseline group against the baseline at the same context.

    The context is the model, dataset and imbalance (those of `CONTEXT_KEYS` that are
    grouping keys); among several matching baselines the one differing in the fewest other
    settings is used. Returns the comparisons and notes for groups without a baseline.
    """
    notes: list[str] = []
    grouping = {k for g in groups for k in g.params}
    missing = [k for k in spec if k not in grouping]
    if missing:
        return [], [f"no head-to-head table: the baseline keys {', '.join(missing)} are not "
                    f"grouping keys (add them to --by)"]
    baselines = [g for g in groups if all(_equal(g.params.get(k), v) for k, v in spec.items())]
    wanted = ", ".join(f"{k}={v}" for k, v in spec.items())
    if not baselines:
        return [], [f"no head-to-head table: no configuration matches the baseline {wanted} "
                    f"(choose another with --baseline)"]
    context = [k for k in CONTEXT_KEYS if k in grouping and k not in spec]
    out = []
    for group in groups:
        if group in baselines:
            continue
        same_context = [b for b in baselines
                        if all(_equal(b.params.get(k), group.params.get(k, "")) for k in context)]
        if not same_context:
            where = ", ".join(f"{k}={group.params.get(k)}" for k in context)
            notes.append(f"{group.label}: no baseline ({wanted}) at {where or 'this setting'}")
            continue
        base = _closest(group, same_context, spec)
        overall, common = compare(group, base, OVERALL)
        classes = [compare(group, base, CLASS_METRIC.format(i=i))[0] for i in range(num_classes)]
        out.append(Comparison(group.label, base.label, overall, classes,
                              stats.verdict(overall), common))
    return out, notes


# ---- table 3: next to the published numbers ----------------------------------------------

@dataclass
class LiteratureRow:
    """A configuration run with SPEC 2's protocol, its top-1 error and the published ones."""

    label: str
    profile: str
    ratio: float
    error: stats.Summary  # top-1 error in percent
    published: list[literature.Published]


LOSS_IDENTITY = ("loss.name", "loss.beta", "loss.gamma", "loss.drw_epoch",
                 "data.imbalance_type", "data.imbalance", "loss.tau", "optim.train",
                 "loss.smoothing")


def _run_values(frame: pd.DataFrame, keys: Sequence[str]) -> dict[str, tuple]:
    """run_id -> the values of the params `keys` (None where missing), in one pass."""
    columns = [f"params.{k}" for k in keys]
    table = frame.reindex(columns=["run_id", *columns]).astype(object)
    table = table.where(table.notna(), None)
    return {values[0]: tuple(values[1:]) for values in table.itertuples(index=False)}


def _error(group: Group, metric: str = OVERALL) -> stats.Summary:
    """The group's top-1 test error in percent (of `metric`, an accuracy)."""
    return stats.summarize([100.0 * (1.0 - v) for v in group.metric(metric)])


MIXUP = [*literature.PROTOCOL].index("data.mixup_alpha")  # in a run's protocol values


def _gaps(gaps_of: Callable[[tuple], tuple[str, ...]], protocol_values: tuple,
          identity: tuple) -> Sequence[str]:
    """A run's protocol gaps (a second stage's: its first stage's, `protocol_values`)."""
    gaps = gaps_of(protocol_values)
    if literature.is_mislas(dict(zip(LOSS_IDENTITY, identity))):
        return literature.mislas_gaps(gaps, protocol_values[MIXUP])
    return gaps


def literature_table(groups: Sequence[Group]) -> tuple[list[LiteratureRow], str | None]:
    """Table 3 rows for the groups whose every run follows the protocol; else a note saying
    which configuration came closest and what it changed."""
    import pandas as pd

    rows: list[LiteratureRow] = []
    closest: tuple[int, str, list[str]] | None = None
    if not groups:
        return rows, None
    frame = pd.concat([g.rows for g in groups])
    # LDAM's head is part of the protocol
    protocol_keys = [*literature.PROTOCOL, "loss.name", "model.classifier"]
    protocol = _run_values(frame, protocol_keys)
    identity = _run_values(frame, LOSS_IDENTITY)
    recipes = _run_values(frame, RECIPE_KEYS)  # the modern recipes' rows (issue 19)
    gaps_of = functools.lru_cache(maxsize=None)(
        lambda values: tuple(literature.protocol_gaps(dict(zip(protocol_keys, values)))))
    # a second stage follows the protocol when its first stage did (issue 18)
    first = dict(zip(frame["run_id"], frame.get("tags.init_from", frame["run_id"])))
    for group in groups:
        run_ids = list(group.rows["run_id"])
        recipe = recipe_published([dict(zip(RECIPE_KEYS, recipes[r])) for r in run_ids])
        if recipe:
            rows.append(LiteratureRow(group.label, recipe[0].profile, recipe[0].ratio,
                                      _error(group), recipe))
            continue
        gaps = sorted({gap for r in run_ids for gap in _gaps(
            gaps_of, protocol.get(first.get(r), protocol[r]), identity[r])})
        identities = {identity[r] for r in run_ids}
        if gaps or len(identities) != 1:
            if gaps and (closest is None or len(gaps) < closest[0]):
                staged = any(isinstance(first.get(r), str) and first[r] != r for r in run_ids)
                closest = (len(gaps), group.label + (", judged by its stage-1 run" if staged
                                                     else ""), gaps)
            continue
        p = dict(zip(LOSS_IDENTITY, identities.pop()))
        ratio = number(p.get("data.imbalance")) or 1.0
        profile = str(p.get("data.imbalance_type") or "exp")
        configs = literature.config_keys(p)
        rows.append(LiteratureRow(group.label, profile, ratio, _error(group),
                                  literature.published_for(configs, profile, ratio)))
        if configs == {"ce"} and _logged(group, POSTHOC_TAU1):  # plain CE
            rows.append(LiteratureRow(f"{group.label} + post-hoc τ=1", profile, ratio,
                                      _error(group, POSTHOC_TAU1),
                                      literature.published_for({"posthoc"}, profile, ratio)))
    if rows:
        return rows, None
    note = (f"no run follows the published protocol (Cui et al., Cao et al.: "
            f"{literature.PROTOCOL_WORDS}, crop + flip)")
    if closest is not None:
        shown = "; ".join(closest[2][:4]) + ("; ..." if len(closest[2]) > 4 else "")
        note += f"; closest: {closest[1]} ({shown})"
    return rows, note
