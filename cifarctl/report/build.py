"""`build_report`: from the MLflow store to the report's tables, as one plain object.

    report = build_report("sqlite:///mlflow.db", experiments=["lt100"])
    report.per_class[0].overall.mean, report.head_to_head[0].verdict, report.to_dict()

Reads runs (`runs`), groups seeds (`groups`), computes the tables (`tables`); rendering
(`render`) and pictures (`figures`) take the result from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from cifarctl.errors import UsageError
from cifarctl.report import groups, runs, tables
from cifarctl.report.groups import Group
from cifarctl.report.selection import selection_notes
from cifarctl.report.stats import CONFIDENCE


@dataclass
class Report:
    """Everything `cifarctl report` shows, before it is rendered."""

    tracking_uri: str
    experiments: list[str]
    parent: str | None
    filter: str
    by: str | None  # the user's --by, None for the default grouping
    grouping_keys: list[str]  # params (or tags.*) that tell configurations apart
    class_names: list[str]
    per_class: list[tables.PerClassRow]
    head_to_head: list[tables.Comparison]
    baseline: dict[str, str]
    literature: list[tables.LiteratureRow]
    notes: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)  # for the figures

    @property
    def varying_keys(self) -> list[str]:
        """Grouping keys whose value differs between configurations (the CSV's key columns)."""
        return [key for key in self.grouping_keys
                if len({row.keys.get(key) for row in self.per_class}) > 1]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`--format json`); schema in ARCHITECTURE.md, "Report"."""
        return {
            "source": {"tracking_uri": self.tracking_uri, "experiments": self.experiments,
                       "parent": self.parent, "filter": self.filter},
            "confidence": CONFIDENCE,
            "grouping_keys": self.grouping_keys,
            "class_names": self.class_names,
            "per_class": [{
                "config": r.label, "keys": r.keys, "n": r.n, "seeds": r.seeds,
                "run_ids": r.run_ids, "test_acc": r.overall.to_dict(),
                "classes": [{"index": i, "name": self.class_names[i], **c.to_dict()}
                            for i, c in enumerate(r.classes)],
                **{g: None if s is None else s.to_dict() for g, s in r.shots.items()},
                "worst_class": None if r.worst is None else {
                    "index": r.worst, "name": self.class_names[r.worst],
                    **r.classes[r.worst].to_dict()},
                "train_counts": r.counts, "selection": r.selection,
                **{m: s.to_dict() for m, s in r.extras.items()},
            } for r in self.per_class],
            "baseline": self.baseline,
            "head_to_head": [{
                "config": c.label, "baseline": c.baseline, "test_acc_diff": asdict(c.overall),
                "class_diffs": [asdict(t) for t in c.classes], "verdict": c.verdict,
                "matched_seeds": c.matched_seeds,
            } for c in self.head_to_head],
            "literature": [{
                "config": r.label, "profile": r.profile, "ratio": r.ratio,
                "error_percent": r.error.to_dict(),
                "published": [{"source": p.source, "method": p.method, "error_percent": p.error,
                               "reference": p.reference, "test_selected": p.test_selected}
                              for p in r.published],
            } for r in self.literature],
            "notes": self.notes,
            "skipped_runs": self.skipped,
        }


def build_report(tracking_uri: str | None = None, *,
                 experiments: Sequence[str] | None = None,
                 parent: str | None = None, filter_string: str = "", by: str | None = None,
                 baseline: str = tables.DEFAULT_BASELINE) -> Report:
    """Load the runs, group their seeds and compute the three tables; UsageError, saying what
    to do, when there is nothing to report on."""
    spec = tables.parse_baseline(baseline)
    from cifarctl.tracking.store import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    loaded = runs.load_runs(uri, experiments=experiments, parent=parent,
                            filter_string=filter_string)
    usable = runs.drop_repeats(runs.split_usable(loaded))
    frame, corruption_note = runs.common_corruptions(usable.frame)
    if frame.empty:
        reasons = sorted({s["reason"] for s in usable.skipped})
        raise UsageError(f"none of the {len(usable.skipped)} runs in "
                         f"{', '.join(loaded.experiments)} can be reported: "
                         f"{'; '.join(reasons)}")
    columns = groups.resolve_columns(by, frame) if by else groups.default_columns(frame)
    columns, data_note = groups.split_by_data(frame, columns)
    num_classes = tables.count_classes(frame)
    frame = groups.link_stages(frame, columns)  # second stages by their first (issue 18)
    configs = groups.make_groups(frame, columns)
    per_class = tables.per_class_table(configs, num_classes)
    comparisons, notes = tables.head_to_head(configs, num_classes,
                                             tables.plain_baseline(spec, columns))
    literature, literature_note = tables.literature_table(configs)
    if left_out := runs.worth_saying(usable.skipped):
        notes.append(f"{len(left_out)} run(s) left out; see 'skipped runs'")
    notes.extend(note for note in (data_note, corruption_note) if note)
    notes.extend(tables.shot_notes(per_class))
    notes.extend(selection_notes({r.label: r.selection for r in per_class},
                                 [(c.label, c.baseline) for c in comparisons]))
    if literature_note:
        notes.append(literature_note)
    if len(loaded.experiments) > 1 and not experiments:
        notes.append(f"runs from {len(loaded.experiments)} experiments "
                     f"({', '.join(loaded.experiments)}); choose with --experiment NAME")
    return Report(
        tracking_uri=uri, experiments=loaded.experiments, parent=parent,
        filter=filter_string, by=by, grouping_keys=[groups.param(c) for c in columns],
        class_names=tables.class_names(frame, num_classes), per_class=per_class,
        head_to_head=comparisons, baseline=spec, literature=literature, notes=notes,
        skipped=usable.skipped, groups=configs)
