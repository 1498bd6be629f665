"""Connecting a sweep to Ray: a fresh local instance, or a cluster that answers in bounded time.

    owned = connect(ray, address=None, env=task_env(uri), log_dir=Path("checkpoints"))

Without `--address` a sweep starts its own local instance (`address="local"`): Ray's default
attaches to whatever `/tmp/ray/ray_current_cluster` names, which a dead cluster leaves behind,
and the sweep hung on "Failed to connect to GCS" (issue 20). With an address (`HOST:6379`,
`ray://HEAD:10001`, `auto`) the port is probed first (it must accept a connection and answer
an HTTP/2 hello with a SETTINGS frame, as every gRPC server does) and `ray.init` is bounded by
`CONNECT_TIMEOUT_S`: a cluster that does not answer, a port that answers as something else
(the MLflow server's), or a cluster that wants a token this machine lacks, is one line saying
what to do, never Ray's retry loop and traceback.

Tasks get `CIFARCTL_DATA`, the tracking URI and every `MLFLOW_TRACKING_*` setting through
Ray's `runtime_env`; Ray's own messages go to `ray.log` in the checkpoint folder.
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cifarctl.errors import UsageError, first_line

CONNECT_TIMEOUT_S = 60.0  # the most `ray.init` may take to reach a cluster (issue 20: about 60 s)
PROBE_TIMEOUT_S = 5.0  # a TCP connect to the cluster's port: refused at once, or this long
ANSWER_TIMEOUT_S = 10.0  # then its gRPC server's first bytes (a GCS on a loaded head: < 1 s)
# What an HTTP/2 client sends first (RFC 9113, 3.4): the preface, then an empty SETTINGS
# frame (length 0, type 4, no flags, stream 0). Every gRPC server, Ray's GCS and its client
# server included, answers with its own SETTINGS frame (RFC 9113, 3.4: a frame header is 3
# bytes length, 1 type, 1 flags, 4 stream); a TLS one (RAY_USE_TLS) with a TLS record.
HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
FRAME_HEADER = 9  # bytes
SETTINGS = 0x4  # the frame type at byte 3 of the header
TLS_RECORDS = (0x15, 0x16)  # a TLS alert or handshake record, then version 3.x (RFC 8446, 5.1)
PASSED_ENV = ("CIFARCTL_DATA",)  # besides MLFLOW_TRACKING_*: what a task reads from its env
TOKEN_HINT = ("set RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, or "
              "RAY_AUTH_TOKEN_PATH naming its file; `ray get-auth-token` on the head prints it)")


def task_env(tracking_uri: str) -> dict[str, str]:
    """The environment variables every task gets through `runtime_env`."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith("MLFLOW_TRACKING_") or k in PASSED_ENV}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def is_local(address: str | None) -> bool:
    return address in (None, "", "local")


def resolve_address(address: str) -> str:
    """`auto` -> the cluster Ray's own `auto` finds (`ray._private.services`,
    `get_ray_address_from_environment`): `$RAY_ADDRESS`, else the address file of the last
    `ray start` on this machine, else the GCS that a running raylet here names (a head started
    with `ray start --temp-dir DIR` writes its address file into DIR, where nobody looks).
    UsageError when there is none, or several running and no address file to choose one
    (Ray would take any)."""
    if address != "auto":
        return address
    from ray._private.services import find_gcs_addresses
    from ray._private.utils import read_ray_address

    found = os.environ.get("RAY_ADDRESS") or read_ray_address()
    if found:
        return found
    find_gcs_addresses.cache_clear()  # Ray keeps what it found for the process's life
    running = sorted(find_gcs_addresses())
    if len(running) > 1:
        raise UsageError(f"--address auto: {len(running)} Ray clusters run on this machine "
                         f"({', '.join(running)}); pass --address with the one to use")
    if not running:
        raise UsageError("--address auto: no Ray cluster was started on this machine (no "
                         "$RAY_ADDRESS, no address file, no running raylet); start one with "
                         "`ray start --head`, or pass --address HOST:6379")
    return running[0]


def host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of `HOST:PORT` or `ray://HOST:PORT`; None when it names no port."""
    rest = address.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() else None


def probe(address: str, timeout: float = PROBE_TIMEOUT_S,
          answer_timeout: float = ANSWER_TIMEOUT_S) -> None:
    """UsageError at once when nothing listens at the cluster's address (a dead cluster), and
    within `answer_timeout` when something accepts but does not answer gRPC's HTTP/2 hello
    with a SETTINGS frame (a wrong port, such as the MLflow server's, or a hung head): Ray's
    own client waited ~40 s there before `bounded` could interrupt it, and over 120 s once in
    a loaded test run."""
    where = host_port(address)
    if where is None:
        return
    try:
        conn = socket.create_connection(where, timeout=timeout)
    except OSError as err:
        raise UsageError(f"cannot reach the Ray cluster at {address} "
                         f"({err.strerror or type(err).__name__}): is it running? Start it with "
                         f"`ray start --head`, check --address, or leave --address out to run "
                         f"on a local Ray instance") from None
    with conn:
        try:
            answer = first_answer(conn, answer_timeout)
        except OSError:  # reset: it reacted; `ray.init` says the rest
            return
    if answer is None:
        raise silent_cluster(address, answer_timeout)
    if not speaks_grpc(answer):
        raise not_a_cluster(address, answer)


def first_answer(conn: socket.socket, timeout: float) -> bytes | None:
    """Send the HTTP/2 hello and read up to a frame header of the answer within `timeout`:
    fewer bytes when the server closed or paused after them, None when it said nothing."""
    deadline = time.monotonic() + timeout
    conn.settimeout(timeout)
    conn.sendall(HTTP2_HELLO)
    answer = b""
    while len(answer) < FRAME_HEADER:
        conn.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            chunk = conn.recv(FRAME_HEADER - len(answer))
        except TimeoutError:
            return answer or None
        if not chunk:  # closed: nothing to judge by when it said nothing
            return answer
        answer += chunk
    return answer


def speaks_grpc(answer: bytes) -> bool:
    """Whether the first bytes back may come from a Ray cluster's port: an HTTP/2 SETTINGS
    frame header, a TLS record, or nothing before the connection closed."""
    if not answer:
        return True
    if answer[0] in TLS_RECORDS and answer[1:2] in (b"", b"\x03"):
        return True
    return len(answer) > 3 and answer[3] == SETTINGS


def not_a_cluster(address: str, answer: bytes) -> UsageError:
    web = answer.startswith(b"HTTP/") or answer.lstrip().startswith(b"<")
    said = ("like an HTTP/1 web server (is it the MLflow server's port?)" if web
            else f"{answer!r}, not the HTTP/2 SETTINGS frame every gRPC server sends")
    return UsageError(f"{address} is not a Ray cluster: it answered {said}; pass the head's GCS "
                      f"port (`ray start --head --port`, 6379 by default) or its Ray client "
                      f"port (ray://HEAD:10001)")


def silent_cluster(address: str, waited: float) -> UsageError:
    return UsageError(f"the Ray cluster at {address} did not answer within {waited:.0f} s; "
                      f"check that it is running (`ray status --address {address}`) and that "
                      f"this machine may reach it")


AUTH_SIGNS = ("AuthenticationError", "UNAUTHENTICATED", "Unauthenticated", "InvalidAuthToken",
              "auth token")


def connect_error(address: str, err: BaseException, said: str = "") -> UsageError:
    """The one line for a failed `ray.init`; `said`: what Ray's C++ client wrote meanwhile
    (Ray 2.60 raises a plain "Failed to connect" for a missing token and says why only there)."""
    text = f"{type(err).__name__} {err} {said}"
    if any(sign in text for sign in AUTH_SIGNS):
        return UsageError(f"the Ray cluster at {address} requires token authentication and "
                          f"this machine has no valid token: {TOKEN_HINT}")
    return UsageError(f"cannot connect to the Ray cluster at {address}: {first_line(err)}; "
                      f"check that it is running (`ray status`) and --address")


@contextlib.contextmanager
def bounded(seconds: float) -> Iterator[threading.Event]:
    """Interrupt the main thread (KeyboardInterrupt) if the block runs longer than `seconds`;
    the event yielded tells whether it did."""
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        _thread.interrupt_main()

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def connect(ray: Any, address: str | None, *, env: dict[str, str], log_dir: Path,
            timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Start or join Ray for a sweep; True if this call started it (so the sweep stops it).
    An instance the caller started already (a notebook, a test) is used as is."""
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                               "logging_level": "ERROR", "runtime_env": {"env_vars": env}}
    if is_local(address):
        redirect_ray_logs(log_dir)
        ray.init(address="local", **options)
        return True
    target = resolve_address(address)
    probe(target)
    log = redirect_ray_logs(log_dir)
    start = log.stat().st_size if log.exists() else 0
    began = time.monotonic()
    try:
        with bounded(timeout) as fired, stderr_to(log):
            ray.init(address=target, **options)
    except KeyboardInterrupt:
        if not fired.is_set():
            raise
        # the interrupt lands only when Ray's C++ client returns to Python (~40 s against a
        # port that accepts and never answers): say how long it really took
        raise silent_cluster(target, max(timeout, time.monotonic() - began)) from None
    except Exception as err:  # noqa: BLE001 - Ray's many connection errors: one line each
        with contextlib.suppress(Exception):
            ray.shutdown()
        with open(log, "rb") as f:  # what Ray's C++ client said while it retried
            f.seek(start)
            said = f.read().decode(errors="replace")
        raise connect_error(target, err, said) from None
    return True


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """File descriptor 2 appended to `path` for the block: Ray's C++ GCS client writes its
    retry warnings there (one a second, for about 20 s, when a token is missing), not through
    Python's logging."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as target:
            os.dup2(target.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def redirect_ray_logs(log_dir: Path) -> Path:
    """Send Ray's Python loggers and the errors its cluster pushes to the driver (a node's
    death with its raylet's last log lines) to `log_dir/ray.log`, away from the table."""
    import ray._private.worker as ray_worker

    log_dir.mkdir(parents=True, exist_ok=True)
    path = (log_dir / "ray.log").absolute()
    logger = logging.getLogger("ray")
    if not any(getattr(h, "baseFilename", None) == str(path) for h in logger.handlers):
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.addHandler(logging.FileHandler(path))
        logger.propagate = False

    def to_log(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        logger.error("\n".join(data.get("lines", [])))

    # Ray's error listener prints through this module global, to stdout, whatever
    # `log_to_driver` says (ray/_private/worker.py, listen_error_messages)
    ray_worker.print_to_stdstream = to_log
    return path
