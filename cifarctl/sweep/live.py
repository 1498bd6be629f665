"""How a sweep shows itself: a rich live table on a terminal, plain lines elsewhere.

    display = make_display(total=len(plan.trials), quiet=False)
    display.update(state)      # after every change of a TrialState
    display.close()

`LiveTable` redraws one row per trial a few times a second; `PlainLines` prints a line per
start, epoch and end for CI logs and pipes; `summary_table` is every sweep's closing table.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from cifarctl.config import resolve_key
from cifarctl.names import TEST_ACC_AT_BEST
from cifarctl.sweep.state import SweepOutcome, TrialState

STYLE = {"queued": "dim", "running": "cyan", "ok": "green", "failed": "bold red",
         "skipped": "blue", "killed": "yellow", "not run": "dim"}


def describe_overrides(overrides: dict[str, Any]) -> str:
    """`loss.beta=0.9 seed=0`: a trial's own values, short keys where they are unique."""
    def short(key: str) -> str:
        name = key.split(".", 1)[1]
        try:
            return name if resolve_key(name) == key else key
        except Exception:  # noqa: BLE001 - ambiguous short name: keep the full key
            return key

    return " ".join(f"{short(k)}={v}" for k, v in overrides.items())


def _progress(state: TrialState) -> str:
    if not state.epochs:
        return "starting" if state.status == "running" else ""
    text = f"epoch {state.epoch}/{state.epochs}"
    if state.status == "running" and state.step:
        done, steps = state.step
        text += f" +{100 * done // max(steps, 1)}%"
    return text


def _acc(state: TrialState) -> str:
    value = state.summary.get(TEST_ACC_AT_BEST, state.acc)
    return "" if value is None else f"{100 * value:.2f}%"


class NullDisplay:
    """Shows nothing (`--quiet`, library use)."""

    def update(self, state: TrialState) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class PlainLines(NullDisplay):
    """One line per start, epoch and end of a trial, on stderr: for CI logs and pipes."""

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total, self.stream = total, stream or sys.stderr
        self.seen: dict[str, tuple[Any, ...]] = {}

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def update(self, state: TrialState) -> None:
        t = state.trial
        before = self.seen.get(t.key)
        now = (state.status, state.pid, state.epoch, state.message)
        self.seen[t.key] = now
        if before == now or (before is None and state.status == "queued"):
            return
        head = f"[{t.index + 1}/{self.total}] {t.key}"
        if before is None or before[0] != state.status:
            if state.status in ("ok", "skipped"):
                self.message(f"{head} {state.status}  {describe_overrides(t.overrides)}  "
                             f"test_acc_at_best {_acc(state) or '-'}  (run {state.run_id})")
            elif state.status != "running":
                where = f"  (run {state.run_id})" if state.run_id else ""  # never started
                self.message(f"{head} {state.status}: {state.message}{where}")
            elif state.pid is None:
                return  # the `started` event follows with the pid
        if state.status != "running":
            return
        if before is None or before[1] != state.pid:
            self.message(f"{head} started  {describe_overrides(t.overrides)}  (pid {state.pid}, "
                         f"run {state.run_id}, from epoch {state.epoch + 1})")
        elif before[2] != state.epoch:
            self.message(f"{head} {_progress(state)}  test acc {_acc(state)}")
        elif before[3] != state.message:
            self.message(f"{head} {state.message}")


class LiveTable:
    """A rich table of every trial, redrawn in place (rows beyond the screen are folded)."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.states: dict[str, TrialState] = {}
        self.total = total
        # transient: the summary table replaces it at the end
        self.live = Live(self._render(), console=self.console, refresh_per_second=4,
                         get_renderable=self._render, transient=True)
        self.live.start()

    def _rows(self) -> list[TrialState]:
        limit = max(5, self.console.size.height - 8)
        states = list(self.states.values())
        if len(states) <= limit:
            return states
        rank = {"running": 0, "failed": 1, "killed": 2, "ok": 3, "queued": 4}
        keep = sorted(states, key=lambda s: (rank.get(s.status, 5), s.trial.index))[:limit]
        return sorted(keep, key=lambda s: s.trial.index)

    def _render(self) -> Any:
        from rich.table import Table

        counts = Counter(s.status for s in self.states.values())
        caption = ", ".join(f"{n} {status}" for status, n in counts.items())
        title = f"sweep: {self.total} trial{'s' * (self.total != 1)}"
        table = Table(title=title, caption=caption, expand=False)
        for column in ("#", "key", "trial", "status", "progress", "test acc", "run / reason"):
            table.add_column(column, overflow="fold",
                             justify="right" if column in ("#", "test acc") else "left")
        for s in self._rows():
            table.add_row(str(s.trial.index + 1), s.trial.key,
                          describe_overrides(s.trial.overrides),
                          f"[{STYLE[s.status]}]{s.status}[/]", _progress(s), _acc(s),
                          s.message if s.status in ("failed", "killed")
                          else (s.run_id or "")[:12])
        return table

    def update(self, state: TrialState) -> None:
        self.states[state.trial.key] = state

    def message(self, text: str) -> None:
        self.live.console.print(text)

    def close(self) -> None:
        self.live.stop()


def make_display(total: int, *, quiet: bool = False) -> Any:
    if quiet:
        return NullDisplay()
    return LiveTable(total) if sys.stderr.isatty() else PlainLines(total)


# Below this many columns the closing table leaves out the trial keys (they are in the
# parent's plan.json and on each child) so that run ids, which `eval` needs whole, fit.
NARROW = 120


def summary_table(outcome: SweepOutcome, width: int | None = None) -> Any:
    """One row per trial, its result or its one-line reason; the keys only if `width` allows."""
    from rich.table import Table
    from rich.text import Text

    counts = ", ".join(f"{n} {s}" for s, n in outcome.counts.items() if n)
    table = Table(title=f"sweep {outcome.plan.spec.name}: {counts} (parent run "
                        f"{outcome.parent_run_id})",
                  caption="test acc: each run's test_acc_at_best, at its best validation "
                          "epoch (the last without a validation split)")
    reasons = any(s.status in ("failed", "killed") for s in outcome.trials)
    keys = width is None or width >= NARROW
    table.add_column("#", justify="right")
    if keys:
        table.add_column("key", no_wrap=True, min_width=12)
    table.add_column("trial", overflow="fold", min_width=12)
    table.add_column("result")
    table.add_column("test acc", justify="right", no_wrap=True, min_width=8)
    table.add_column("run", no_wrap=True, min_width=32)
    if reasons:
        table.add_column("reason", overflow="fold", ratio=2)
    for s in outcome.trials:
        row = [str(s.trial.index + 1), *([s.trial.key] if keys else []),
               describe_overrides(s.trial.overrides),
               f"[{STYLE[s.status]}]{s.status}[/]", _acc(s), s.run_id or ""]
        # as Text: a reason such as "[Errno 2] ..." is not rich markup to be swallowed
        reason = Text(s.message if s.status in ("failed", "killed", "not run") else "")
        table.add_row(*row, *([reason] if reasons else []))
    return table
