"""Which epoch a run's test numbers come from, as the report says it (issue 6's tables).

    rules = selection_rules(group.rows)        # {"best validation epoch": 3}
    notes = selection_notes({"CE": rules, ...}, [("CB-focal", "CE")])  # config, baseline

Each run's `selection` tag (`names.SELECTION_TAG`, set by `training.record.run_tags`)
names its rule: the best validation epoch, or the final epoch without a validation split (or
with save_best off). A paper has to state it, and a best-validation epoch beside a final one
is not a like-for-like difference, so table 1's caption names the rules and a note flags
where they mix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from cifarctl.names import SELECTION_TAG

if TYPE_CHECKING:
    import pandas as pd

UNKNOWN_SELECTION = "not recorded"  # runs logged before the tag existed


def selection_rules(rows: pd.DataFrame) -> dict[str, int]:
    """How many of `rows` report each epoch rule (`best validation epoch`, `final epoch (no
    validation split)`, ...); runs logged before the tag count as `not recorded`."""
    column = f"tags.{SELECTION_TAG}"
    tags = rows[column] if column in rows else [None] * len(rows)
    return dict(Counter(t if isinstance(t, str) else UNKNOWN_SELECTION for t in tags)
                .most_common())


def selection_notes(rules: Mapping[str, Mapping[str, int]],
                    comparisons: Sequence[tuple[str, str]]) -> list[str]:
    """A note for each configuration (label -> its `selection_rules`) whose runs report
    different epochs, and for each (configuration, baseline) whose two sides do: a
    best-validation epoch against a final one is not a like-for-like difference."""
    notes = [f"{label}: its runs report different epochs ("
             + "; ".join(f"{rule}: {n}" for rule, n in counts.items())
             + "); group them apart with --by or filter them"
             for label, counts in rules.items() if len(counts) > 1]
    notes += [f"{label} and its baseline {base} report different epochs "
              f"({' / '.join(sorted(rules[label]))} against "
              f"{' / '.join(sorted(rules[base]))})" for label, base in comparisons
              if label in rules and base in rules and set(rules[label]) != set(rules[base])]
    return notes
