"""How a training run shows itself while it works: a rich bar, plain lines, or nothing.

    reporter = make_reporter(quiet=False)   # rich bar on a terminal, one line per epoch otherwise
    reporter.epoch_started(epoch, epochs, steps)

The training loop calls these hooks with plain Python numbers; it never prints itself
(STYLE principle 6). `NullReporter` is the do-nothing implementation; a sweep's live table
implements the same hooks. A reporter whose reader goes away (`train ... 2>&1 | head`, a
terminal that hung up) stops showing anything and the run goes on: progress is for people,
and nobody is left to read it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TextIO


class Reporter(Protocol):
    """The hooks the loop calls; each does nothing unless a reporter overrides it."""

    def message(self, text: str) -> None: ...
    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, steps_done: int, running: Mapping[str, float] | None) -> None: ...
    def epoch_ended(self, epoch: int, epochs: int, metrics: Mapping[str, float]) -> None: ...
    def close(self) -> None: ...


class NullReporter(Reporter):
    """Shows nothing (`--quiet`, library use, tests)."""


def epoch_line(epoch: int, epochs: int, m: Mapping[str, float]) -> str:
    """`epoch 3/50  train 1.234/45.6%  val ...  test 0.987/61.2%  lr 0.1  2412 img/s  12.3s`."""
    parts = [f"epoch {epoch + 1}/{epochs}"]
    for split in ("train", "val", "test"):
        if f"{split}_loss" in m:
            parts.append(f"{split} {m[f'{split}_loss']:.4f}/{100 * m[f'{split}_acc']:.2f}%")
    parts += [f"lr {m['lr']:.4g}", f"{m['images_per_s']:.0f} img/s", f"{m['epoch_time_s']:.1f}s"]
    return "  ".join(parts)


def silence(stream: Any) -> None:
    """Point `stream`'s file descriptor at /dev/null, so that later writes to it (a warning,
    the interpreter's flush at exit) succeed unseen instead of failing again: what the
    Python docs advise for EPIPE (library/signal.html, "Note on SIGPIPE")."""
    with contextlib.suppress(AttributeError, ValueError, OSError):  # no descriptor: nothing
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)


@contextlib.contextmanager
def unless_closed(stream: TextIO, on_close: Callable[[], None] | None = None
                  ) -> Iterator[None]:
    """Write to `stream` in the block; if its reader has gone, end the block quietly, send
    later writes to /dev/null and call `on_close`. Any other error goes on."""
    try:
        yield
    except OSError as err:
        if err.errno not in (errno.EPIPE, errno.EIO):  # closed pipe; terminal or SSH gone
            raise
        silence(stream)
        if on_close is not None:
            on_close()


def closing_console(*, stderr: bool = False) -> Any:
    """A rich `Console` that goes quiet when its pipe closes (rich's own `on_broken_pipe`
    raises SystemExit(1), which would turn a finished run into exit 1)."""
    from rich.console import Console

    console = Console(stderr=stderr)

    def go_quiet() -> None:
        console.quiet = True
        silence(console.file)

    console.on_broken_pipe = go_quiet  # type: ignore[method-assign]
    return console


class LineReporter(NullReporter):
    """One line per epoch on stderr: for CI logs, pipes and files."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.closed = False  # its reader went away: nothing more is written

    def message(self, text: str) -> None:
        if not self.closed:
            with unless_closed(self.stream, on_close=self._stop_writing):
                print(text, file=self.stream, flush=True)

    def _stop_writing(self) -> None:
        self.closed = True

    def epoch_ended(self, epoch: int, epochs: int, metrics: Mapping[str, float]) -> None:
        self.message(epoch_line(epoch, epochs, metrics))


class RichReporter(LineReporter):
    """For terminals: the epoch lines above a live bar of running loss, accuracy, img/s."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = closing_console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=True,
        )
        self.progress.start()
        self.task = None

    def message(self, text: str) -> None:
        # rich catches a closed pipe itself (closing_console), not a hung-up terminal's EIO
        with unless_closed(self.console.file, on_close=self._stop_writing):
            self.progress.console.print(text)

    def _stop_writing(self) -> None:
        self.console.quiet = True

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"epoch {epoch + 1}/{epochs}", total=steps, stats="")

    def step(self, steps_done: int, running: Mapping[str, float] | None) -> None:
        if not running:  # the running numbers come every few steps (one host sync each):
            self.progress.update(self.task, completed=steps_done)  # keep the last ones shown
            return
        stats = (f"loss {running['loss']:.4f}  acc {100 * running['acc']:.1f}%  "
                 f"{running['images_per_s']:.0f} img/s")
        self.progress.update(self.task, completed=steps_done, stats=stats)

    def close(self) -> None:
        with unless_closed(self.console.file, on_close=self._stop_writing):
            self.progress.stop()


def make_reporter(*, quiet: bool = False) -> Reporter:
    """Rich on an interactive terminal, plain lines otherwise (CI, pipes), nothing if quiet."""
    if quiet:
        return NullReporter()
    if sys.stderr.isatty():
        return RichReporter()
    return LineReporter()


class Phases(contextlib.AbstractContextManager):
    """The passes of a job that has no step count to show (an `eval`'s clean and corrupted
    passes): each `start(text)` ends the one before. On a terminal a spinner with the time
    each has taken, so a minute-long pass on a CPU is not mistaken for a hang; elsewhere a
    line each.

        with Phases(Console(stderr=True)) as phases:
            phases.start("evaluating clean test set: 10000 images")
    """

    def __init__(self, console: Any) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console, self.task = console, None
        self.live = Progress(SpinnerColumn(finished_text="[green]✓"),
                             TextColumn("[dim]{task.description}"), TimeElapsedColumn(),
                             console=console) if console.is_terminal else None

    def start(self, text: str) -> None:
        if self.live is None:
            self.console.print(text, style="dim")
            return
        if self.task is None:
            self.live.start()
        else:
            self.live.update(self.task, total=1, completed=1)
        self.task = self.live.add_task(text, total=None)

    def close(self) -> None:
        if self.live is not None and self.task is not None:
            self.live.update(self.task, total=1, completed=1)
            self.live.stop()

    def __exit__(self, *exc: object) -> None:
        self.close()
