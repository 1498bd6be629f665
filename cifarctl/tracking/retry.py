"""Retry tracking calls that failed only because someone else held the store for a moment.

    run = call_with_retry(client.get_run, run_id)

Why: sweep workers (`--workers N`) and fused training write to one sqlite file at once.
MLflow sets a 20 s busy timeout, but SQLite refuses a reader's upgrade to writer at once
("database is locked") when another writer holds the lock, to avoid deadlock; MLflow then
raises `MlflowException(error_code="TEMPORARILY_UNAVAILABLE")`. The failed transaction was
rolled back, so calling again is safe. Connection errors to a server and its 5xx answers
are not retried here: MLflow's HTTP client already retries those
(`MLFLOW_HTTP_REQUEST_MAX_RETRIES`: ~30 s as `mlflow_tracker` sets it); once its retries are
spent, a lost server is one `TrackingLost` line, not MLflow's paragraph or a traceback. A
server that refuses this client (credentials, its Host-name guard) is one UsageError.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from cifarctl.errors import CifarctlError, UsageError
from cifarctl.tracking.store import is_server, refusal

T = TypeVar("T")

ATTEMPTS = 10  # with the delays below: about 15 s of waiting before the error is raised
FIRST_DELAY_S = 0.05  # doubled per attempt, with jitter so that workers do not retry in step
MAX_DELAY_S = 4.0

_LOCKED = ("database is locked", "database table is locked")
# Two runs logging the same dataset at once (sweep workers starting together): MLflow looks
# for the dataset row, then inserts it, so the slower writer breaks the table's primary key.
# Its transaction was rolled back; called again, it finds the row and reuses it. Each
# database words it its own way: SQLite names the columns; PostgreSQL, through an MLflow
# server (as BAD_REQUEST), names MLflow's constraint `dataset_pk`; MySQL the table's PRIMARY
# key. Seen on PostgreSQL in CI, 2026-12-04: one of two sweep workers failed its trial.
_RACES = ("UNIQUE constraint failed: datasets.", 'unique constraint "dataset_pk"',
          "for key 'datasets.PRIMARY'")
# MLflow's words for an answer that is no MLflow error (a plain-text body: the Host guard's,
# the basic-auth app's "You are not authenticated" and "Permission denied")
_ANSWER = re.compile(r"failed with error code (\d{3}) != \d{3}\. Response body: '(.*)'", re.DOTALL)
_jitter = random.Random()  # its own generator: retries must not touch the global RNG
_log = logging.getLogger(__name__)


def is_lock_message(text: str) -> bool:
    """True for SQLite's "database is locked" family of messages."""
    return any(lock in text for lock in _LOCKED)


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    """`err`, then the error it was raised from (or while handling), and so on."""
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def is_transient(err: BaseException) -> bool:
    """True for a store that was busy (sqlite lock, TEMPORARILY_UNAVAILABLE) or lost a race
    with another writer inserting the same dataset; False for bad input."""
    return any(getattr(e, "error_code", None) == "TEMPORARILY_UNAVAILABLE"
               or is_lock_message(str(e)) or any(race in str(e) for race in _RACES)
               for e in _chain(err))


class TrackingLost(CifarctlError):
    """An MLflow server stopped answering, and MLflow's own retries are spent."""

    def __init__(self, where: str, fix: str = "start it again") -> None:
        super().__init__(f"lost the MLflow tracking server {where}; {fix} and rerun: a run "
                         f"resumes from its last checkpoint (`cifarctl train --resume RUN_ID`, "
                         f"or the same `cifarctl sweep` again)")


# urllib3's words once a request got a retried status (MLflow retries 429 and 5xx) each time:
# "Max retries exceeded ... (Caused by ResponseError('too many 503 error responses'))", kept
# in MLflow's message, so a Ray task's pickled error, which lost its chain, still says it
_SPENT = re.compile(r"too many (\d{3}) error responses")


def lost_server(err: BaseException) -> TrackingLost | None:
    """`TrackingLost` when `err` is MLflow giving up on a server that refuses connections,
    does not answer (`at http://host:port (Connection refused)`), or answered 5xx to every
    retry (a server whose database is down: PostgreSQL stopped for minutes); None for every
    other error."""
    import requests  # MLflow's HTTP client; not imported with `cifarctl --help`

    cause = next((c for c in _chain(err) if _SPENT.search(str(c)) or isinstance(
        c, (requests.exceptions.ConnectionError, requests.exceptions.Timeout))), None)
    if cause is None:
        return None
    spent = _SPENT.search(str(cause))
    url = re.search(r"API request to (\w+://[^/\s]+)", str(err))
    where = f"at {url.group(1) if url else 'its address'}"
    if spent:
        return TrackingLost(f"{where} (it answered {spent.group(1)} to every retry: its "
                            f"database may be down)", "check the server's log and database")
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(cause))
    reason = (errno.group(1) if errno
              else "no answer" if isinstance(cause, requests.exceptions.Timeout)
              else type(cause).__name__)
    return TrackingLost(f"{where} ({reason})")


def refused(err: BaseException, uri: str | None = None) -> str | None:
    """`store.refusal`'s line when `err` is MLflow reporting that the tracking server (at
    `uri`, when known) refused this client; None for every other error."""
    for cause in _chain(err):
        answer = _ANSWER.search(str(cause))
        message = refusal(uri, int(answer.group(1)), answer.group(2)) if answer else None
        if message is not None:
            return message
    return None


def _server_of(fn: Callable) -> str | None:
    """The tracking URI of an `MlflowClient` method's client (None for other callables)."""
    uri = getattr(getattr(fn, "__self__", None), "tracking_uri", None)
    return uri if isinstance(uri, str) and is_server(uri) else None


def call_with_retry(fn: Callable[..., T], *args, **kwargs) -> T:
    """`fn(*args, **kwargs)`, called again with exponential backoff while it fails transiently;
    `TrackingLost` when the server is out of reach, a UsageError when it refuses this client."""
    delay, attempt = FIRST_DELAY_S, 1
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            lost = lost_server(err)
            if lost is not None:
                raise lost from err
            message = refused(err, _server_of(fn))
            if message is not None:
                raise UsageError(message) from err
            if attempt == ATTEMPTS or not is_transient(err):
                raise  # the last attempt's error is the caller's
            _log.debug("tracking store busy (%s), retry %d in %.2f s", err, attempt, delay)
            time.sleep(delay * (0.5 + _jitter.random()))
            delay, attempt = min(2 * delay, MAX_DELAY_S), attempt + 1
