"""Which sweep driver holds a sweep: one claim per driver, a heartbeat while it drives.

    claim(store, parent, experiment)     # UsageError naming the live driver that holds it
    with Heartbeat(store, outcome, stop):   # every HEARTBEAT_S, on the parent and running
        ...                              # children; `stop` set if another driver claimed it
    held_elsewhere(child)                # why a RUNNING child must not be started again

MLflow has no locks, and two drivers of one sweep (two terminals, two machines of a cluster)
would train every trial twice. A run's params cannot change, which is enough for a claim: a
driver logs param `sweep.driver.<n>` = its id on the parent, n one past the highest there; of
two drivers claiming the same n at once one write stands and the other reads it back and
refuses. The tag `cifarctl.sweep_heartbeat` (`host:pid at <unix seconds>`), rewritten every
HEARTBEAT_S on the parent and on the children in flight, says the holder lives: another
driver refuses while it is younger than STALE_S (and, on the same machine, while its process
lives), and takes an older one over (a driver that died, on any machine). Machines' clocks
must agree to well within STALE_S (NTP keeps them within milliseconds).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any

from cifarctl.errors import UsageError
from cifarctl.names import SWEEP_HEARTBEAT_TAG, SWEEP_OWNER_TAG
from cifarctl.tracking.owner import alive_owner, on_this_host, owner

if TYPE_CHECKING:
    from cifarctl.sweep.state import SweepOutcome
    from cifarctl.tracking.runstore import RunStore
    from cifarctl.tracking.stored import StoredRun

HEARTBEAT_S = 10.0  # how often a driver says it lives
STALE_S = 60.0  # a heartbeat older than this is a dead driver's (6 beats missed)
CLAIM = "sweep.driver."  # + n: the parent's params, one per driver that held it
_NONCE = secrets.token_hex(4)  # two containers may share a host name and a pid


def driver_id() -> str:
    """This process as a claim: `host:pid/nonce`."""
    return f"{owner()}/{_NONCE}"


def heartbeat(who: str | None = None) -> dict[str, str]:
    """The tags that say process `who` (host:pid; default: this one) drives a run, now."""
    who = who or owner()
    return {SWEEP_HEARTBEAT_TAG: f"{who} at {time.time():.0f}", SWEEP_OWNER_TAG: who}


def live_driver(run: StoredRun) -> tuple[str, float | None] | None:
    """(host:pid, seconds since its heartbeat, None without one) of another live process
    driving `run` (a sweep's parent or child), else None."""
    if run.status != "RUNNING":
        return None
    beat = run.tags.get(SWEEP_HEARTBEAT_TAG)
    if beat is None:  # a sweep from before heartbeats: only a live process here counts
        who = run.tags.get(SWEEP_OWNER_TAG, "")
        return (who, None) if alive_owner(who) is not None else None
    who, _, at = beat.rpartition(" at ")
    age = time.time() - (float(at) if at.isdigit() else 0.0)  # unreadable: stale
    if who == owner() or age > STALE_S or (on_this_host(who) and alive_owner(who) is None):
        return None
    return who, max(age, 0.0)


def _running_elsewhere(who: str, age: float | None, what: str, run: str) -> str:
    """`what` is driven by process `who` (host:pid), whose heartbeat is `age` seconds old."""
    host, _, pid = who.rpartition(":")
    where = "" if on_this_host(who) else f" on {host}"
    beat = "" if age is None else f", its heartbeat {age:.0f} s ago"
    return (f"{what} is already running (process {pid}{where}, {run}{beat}); wait for it, or "
            f"stop it with `kill {pid}`{where} (a driver that died is taken over "
            f"{STALE_S:.0f} s after its last heartbeat)")


def latest_claim(run: StoredRun) -> tuple[int, str | None]:
    """(n, holder) of the run's highest `sweep.driver.<n>` param; (0, None) without one."""
    claims = {int(k[len(CLAIM):]): v for k, v in run.params.items()
              if k.startswith(CLAIM) and k[len(CLAIM):].isdigit()}
    return max(claims.items(), default=(0, None))


def claim(store: RunStore, parent: StoredRun, experiment: str) -> None:
    """Make this process the parent's driver (RUNNING, heartbeat, the next claim), or
    UsageError when another driver lives or claims it at the same moment."""
    from cifarctl.tracking.mlflow_tracker import start_run

    what, run = "this sweep", f"parent run {parent.run_id}"
    live = live_driver(parent)
    if live is not None:
        raise UsageError(_running_elsewhere(*live, what, run))
    n = latest_claim(parent)[0] + 1
    # the heartbeat first: a third driver reading between the two sees a live one
    tracker = start_run(experiment=experiment, tracking_uri=store.uri, run_id=parent.run_id,
                        tags=heartbeat())
    key = f"{CLAIM}{n}"
    try:
        tracker.log_params({key: driver_id()})
    except Exception:  # another's claim of n stands (a conflict, or the race's IntegrityError)
        if key not in store.get_run(parent.run_id).params:  # no: a failure of its own
            raise
    holder = store.get_run(parent.run_id).params.get(key, "")
    if holder != driver_id():
        who = holder.partition("/")[0]
        tracker.set_tags(heartbeat(who))  # it claimed n just now; ours may have hidden its beat
        raise UsageError(_running_elsewhere(who, None, what, run))
    tracker.set_tags(heartbeat())  # again: the other's write may have come after ours


def held_elsewhere(child: StoredRun) -> str | None:
    """Why the trial of `child` must not start again here: its run is RUNNING under another
    live driver (one that lost its claim to this one and has not noticed yet); else None."""
    live = live_driver(child)
    return None if live is None else _running_elsewhere(*live, "its trial", f"run {child.run_id}")


class Heartbeat:
    """The daemon thread that writes the heartbeat, from `__enter__` to `__exit__`. When
    another driver has claimed the parent since, it stops writing, sets `lost` and stops the
    sweep through `stop` (`training.signals.StopFlag`: the trials checkpoint and end KILLED)."""

    def __init__(self, store: RunStore, outcome: SweepOutcome, stop: Any,
                 every: float = HEARTBEAT_S) -> None:
        from cifarctl.tracking.runstore import RunStore

        self.store = RunStore(store.uri)  # its own client: this thread's
        self.outcome, self.stop, self.every = outcome, stop, every
        self.lost: str | None = None  # the driver that took the sweep over
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="sweep-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(self.every)  # a beat stuck on a lost server: left to die with us

    def _loop(self) -> None:
        while not self.done.wait(self.every):
            with contextlib.suppress(Exception):  # a missed beat: the next one tries again
                parent = self.outcome.parent_run_id
                holder = latest_claim(self.store.get_run(parent))[1]
                if holder is not None and holder != driver_id():
                    self.lost = holder.partition("/")[0]
                    self.stop.signal_name = (f"another sweep driver ({self.lost}) took this "
                                             f"sweep over")
                    self.stop.requested = True
                    return
                running = [t.run_id for t in self.outcome.trials if t.status == "running"]
                for run_id in [parent, *running]:
                    self.store.set_tags(run_id, heartbeat())
