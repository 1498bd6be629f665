"""Ctrl-C, SIGTERM and SIGHUP during training: stop at the next step boundary, checkpoint,
resume.

    stop = StopFlag()
    with stop.installed():
        train_steps(..., should_stop=stop)   # a second Ctrl-C raises KeyboardInterrupt
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


def _stop_signals() -> list[signal.Signals]:
    """SIGINT and SIGTERM, and SIGHUP (a closed terminal or SSH session) unless this process
    ignores it: under `nohup` a hangup must not stop the run."""
    hangup = getattr(signal, "SIGHUP", None)  # not on Windows
    ignored = hangup is None or signal.getsignal(hangup) is signal.SIG_IGN
    return [signal.SIGINT, signal.SIGTERM] + ([] if ignored else [hangup])


class StopFlag:
    """Set by SIGINT/SIGTERM/SIGHUP; the loop checks it between steps (a second Ctrl-C
    aborts)."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals only reach the main thread; workers are stopped by it
            return
        previous = {s: signal.signal(s, self._handle) for s in _stop_signals()}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
