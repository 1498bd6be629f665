"""Jobs run in order in a background thread, their first error raised in the thread that
waits for them.

    writes = Background("epoch-writes")
    writes.start(lambda: save_and_log(state))   # returns at once; jobs run in order
    writes.wait()                               # before anything that must follow them

An epoch's checkpoints and metrics (`RunRecord`, one queue for a fused group's K runs) and a
run's checkpoint uploads (`follow.CheckpointUpload`) are written this way, so the next epoch
trains meanwhile. One thread, not one a run: K threads would take the interpreter's lock from
the thread that drives the device. A job that failed fails the run at the next wait: a disk
or an artifact store that fails is a failed run, never a silent one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor


class Background:
    """One queue of jobs; its thread (named `name`) lives from the first `start` to `wait`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pool: ThreadPoolExecutor | None = None
        self.pending: list[Future[object]] = []
        self.held: list[Callable[[], object]] | None = None
        self.error: BaseException | None = None

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Jobs started in the block begin when it ends: while a job runs, every tensor op of
        this thread waits for the interpreter's lock (a fused group's K host copies, ~100
        tensors each, took 0.16 s instead of 0.01 s; benchmarks/epoch_record.py)."""
        self.held = []
        try:
            yield
        finally:
            held, self.held = self.held, None
            for job in held:
                self.start(job)

    def start(self, job: Callable[[], object]) -> None:
        """Queue `job` behind the jobs not yet waited for."""
        if self.held is not None:
            self.held.append(job)
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        self.pending.append(self.pool.submit(job))

    def wait(self, *, keep_error: bool = False) -> None:
        """Block until every queued job is done (its thread gone); raise the first error not
        raised yet, or with `keep_error` leave it to the next wait (a run that aborts must
        not swallow the error of another run's write in the same queue)."""
        pending, self.pending = self.pending, []
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None
        for done in pending:
            self.error = self.error or done.exception()
        if self.error is not None and not keep_error:
            error, self.error = self.error, None
            raise error
