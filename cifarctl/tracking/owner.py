"""Which process drives a run: a `host:pid` tag, and whether that process still lives.

    tags = {TRAINER_TAG: owner()}              # set by the process that trains the run
    alive_owner(run.data.tags[TRAINER_TAG])    # its pid while it runs on this machine, else None

A RUNNING status alone cannot tell a live run from one whose process died (a crash, a lost
machine); the pid can, on the same host. A second process training the same run would log
every step twice, so `train --resume` and `sweep` refuse while the owner lives.
"""

from __future__ import annotations

import os
import socket

from cifarctl.atomic import writer_gone
from cifarctl.names import TRAINER_TAG  # noqa: F401  (re-exported: the tag this module sets)


def owner() -> str:
    """`host:pid` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def on_this_host(value: str) -> bool:
    """Whether `value` (`host:pid`) names a process on this machine."""
    return value.rpartition(":")[0] == socket.gethostname()


def alive_owner(value: str) -> int | None:
    """The pid in `value` (`host:pid`) if it is another live process on this machine."""
    host, _, pid = value.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return None
    return None if writer_gone(int(pid)) else int(pid)
