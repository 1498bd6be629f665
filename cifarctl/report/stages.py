"""Second stages in the report: grouped and labelled by the configuration they started from.

    frame = link_stages(frame, columns)          # run.init_from: run id -> "CE" (its label)
    spec = plain_baseline(spec, grouping_keys)   # the baseline at every later key's default

A stage-2 run's `run.init_from` param is its stage-1 run's id, different for every seed;
the report replaces it by the label of that run's configuration, so the seeds of "cRT on
CE" are one group, labelled `init_from=CE` beside the keys that make it a second stage. A
stage-1 run outside the report keeps `run <id prefix>`. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from cifarctl.report.groups import make_groups

if TYPE_CHECKING:
    import pandas as pd

INIT_FROM = "params.run.init_from"


def link_stages(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """`frame` with each stage-2 run's `run.init_from` given as its stage-1 run's label (among
    the runs that are no second stage); unchanged when no run is a second stage."""
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
    return out


def plain_baseline(spec: Mapping[str, str], grouping: Sequence[str]) -> dict[str, str]:
    """The baseline `spec` plus, for each config key added later that the runs are grouped
    by, its default: plain CE is the baseline, not CE re-trained in a second stage or
    sampled class-balanced."""
    from cifarctl.config import later_defaults

    keys = {c.removeprefix("params.") for c in grouping}
    return {**{k: str(v) for k, v in later_defaults().items() if k in keys and k not in spec},
            **spec}
