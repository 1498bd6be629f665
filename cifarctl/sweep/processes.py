"""How a local sweep starts its worker processes: forked from a fork server that has imported
torch and MLflow once, not spawned as fresh interpreters that each import them again.

    ctx = worker_context()                  # a multiprocessing context
    ctx.Process(target=process_main, ...)   # starts in milliseconds after the first

A spawned worker spends seconds importing torch, MLflow and the training code before its first
step (about 4 s on one core of the development machine, more when the cores are busy), once
per group: a sweep of many short trials paid it over and over. multiprocessing's fork server
is a fresh interpreter (started, never forked, from the sweep, so it inherits no thread, lock
or CUDA context) that imports `PRELOAD` once; each worker is a fork of it. Importing torch
does not initialise CUDA, so a worker still picks its GPU (`CUDA_VISIBLE_DEVICES`) before its
first CUDA call, and a crash still stays in its own process.

`CIFARCTL_WORKER_START=spawn` goes back to spawning (the default off Linux); a worker gets the
sweep's environment either way (`worker_env`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from cifarctl.errors import UsageError

# what a worker imports before its first step (measured with `python -X importtime`): torch,
# torch._dynamo (the optimizers load it on their first step, ~1 s), MLflow and its stores, the
# training code, and matplotlib for the end-of-run figures. A module that fails to import is
# skipped by the server and imported by the worker as before.
PRELOAD = ["torch", "torch._dynamo", "torchvision", "mlflow",
           "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.tracking.rest_store",
           "cifarctl.tracking.mlflow_tracker", "cifarctl.training.loop",
           "cifarctl.training.group", "cifarctl.training.record", "cifarctl.training.data",
           "cifarctl.training.stages", "cifarctl.sweep.stages", "matplotlib.figure",
           "matplotlib.backends.backend_agg"]
START_METHODS = ("forkserver", "spawn")


def start_method(platform: str = sys.platform) -> str:
    """`$CIFARCTL_WORKER_START`, else the fork server on Linux. Not on macOS, where Python
    itself stopped forking by default (system frameworks are not fork-safe), nor Windows."""
    chosen = os.environ.get("CIFARCTL_WORKER_START", "")
    if chosen and chosen not in START_METHODS:
        raise UsageError(f"CIFARCTL_WORKER_START={chosen}: expected one of "
                         f"{', '.join(START_METHODS)} (or unset: forkserver on Linux)")
    return chosen or ("forkserver" if platform.startswith("linux") else "spawn")


def worker_context() -> Any:
    """The multiprocessing context workers start from; a fork server begins its imports now,
    while the sweep prepares its runs."""
    method = start_method()
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        from multiprocessing import forkserver

        ctx.set_forkserver_preload(PRELOAD)
        with _sigint_ignored():
            forkserver.ensure_running()
    return ctx


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while the fork server is started: it inherits that across exec, so a
    Ctrl-C to the terminal's process group during its imports cannot kill it (with a
    traceback, failing the first workers); it ignores SIGINT itself once they are done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def start_worker(process: Any) -> str | None:
    """Start a worker; why it could not (the fork server gone, no process left), else None."""
    try:
        process.start()
    except (OSError, EOFError) as err:
        return f"its worker process did not start ({type(err).__name__}: {err})"
    return None


def worker_env() -> dict[str, str]:
    """The sweep's environment now, for a worker to take on first (`adopt_env`): a fork
    server's environment is the one it started with, a spawned process's the one at its start."""
    return dict(os.environ)


def adopt_env(env: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(env)
