"""Progress of long data work (download, archive reading, JPEG decoding), kept out of the library.

    with progress.task("decoding images", total=60_000) as advance:   # (or in_bytes=True)
        advance(2_000)

The data functions report through this small interface and never print (STYLE principle 6):
`NullProgress` shows nothing, `RichProgress` draws bars on stderr, and `auto_progress()`
picks Rich only when stderr is a terminal, so logs and tests stay clean.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

Advance = Callable[[int], None]


class Progress(Protocol):
    def task(self, description: str, total: int | None, *, in_bytes: bool = False):
        """A context manager yielding `advance(n)`; `in_bytes` shows sizes in MB."""


class NullProgress:
    """Shows nothing."""

    @contextmanager
    def task(self, description: str, total: int | None, *,
             in_bytes: bool = False) -> Iterator[Advance]:
        yield lambda n: None


class RichProgress:
    """One transient Rich bar per task on stderr."""

    @contextmanager
    def task(self, description: str, total: int | None, *,
             in_bytes: bool = False) -> Iterator[Advance]:
        from rich import progress as bars
        from rich.console import Console

        count = bars.DownloadColumn() if in_bytes else bars.MofNCompleteColumn()
        bar = bars.Progress(bars.TextColumn("{task.description}"), bars.BarColumn(), count,
                            bars.TimeRemainingColumn(), console=Console(stderr=True),
                            transient=True)
        with bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)


def auto_progress() -> Progress:
    """Rich bars on an interactive terminal, nothing otherwise (pipes, CI, tests)."""
    return RichProgress() if sys.stderr.isatty() else NullProgress()
