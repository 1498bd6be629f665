"""The MLflow UI on the store that `cifarctl train` writes to (issue 9).

    with start_ui(port=0) as ui:          # `mlflow server` on a free port, stopped on exit
        print(ui.url)                     # http://127.0.0.1:40123, /health answered
        ui.wait()                         # until Ctrl-C / SIGTERM, or the server dies

The store is resolved exactly as training resolves it (`--tracking-uri`, then
`$MLFLOW_TRACKING_URI`, then `./mlflow.db` with artifacts in `./mlruns`), so `cifarctl ui`
in a project folder shows that folder's runs. An `http(s)://` store is a server already:
there is nothing to start, its URL is the UI.

`mlflow server` runs as a child in its own process group: Ctrl-C in the terminal reaches
this process only, which then stops the whole group (MLflow's CLI process and its uvicorn
server), so no server outlives the command. Its output goes to a log file whose last error
line is reported if it dies.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cifarctl.errors import CifarctlError, UsageError
from cifarctl.tracking.store import (
    artifact_root,
    check_experiment,
    check_reachable,
    check_store,
    is_server,
    resolve_tracking_uri,
)

DEFAULT_HOST = "127.0.0.1"  # this machine only; `--host 0.0.0.0` shares the UI on a network
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_PORT = 5000  # `mlflow server`'s own default
# `mlflow server` answers /health after ~7 s on an idle 2-core machine and ~14 s on a busy one
# (measured, MLflow 3.17); the limit only catches a server that hangs.
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 10.0  # uvicorn's graceful shutdown, then SIGKILL
POLL_S = 0.25  # /health polling interval while starting
# MLflow 3's UI opens every experiment in its GenAI view (traces) unless the page URL says
# otherwise or the browser remembers a click on "Model training"; runs live in that view.
RUNS_VIEW = "workflowType=machine_learning"
# Environment defaults for the server (a user's own setting wins):
SERVER_ENV = {
    # MLflow's GenAI job runner (a huey consumer) is of no use for training runs and makes
    # start-up ~40 s instead of ~7 s here (measured by the tracking work, MLflow 3.17).
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    # otherwise the server fetches its UI-telemetry settings from the internet on every UI
    # load (mlflow.server.handlers.get_ui_telemetry_handler): slow or failing offline
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
WORKERS = 1  # one person's browser; each extra uvicorn worker imports MLflow again


def _url_host(host: str) -> str:
    """The host part of a URL that reaches a server bound to `host`."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"  # a wildcard bind answers on loopback too
    return f"[{host}]" if ":" in host else host


def _bind(host: str, port: int) -> int | OSError:
    """The port a server could listen on at `host:port` now (port 0: any), or why it could not;
    UsageError for a host that is no address."""
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise UsageError(f"--host {host!r} is not an address of this machine ({err.strerror}); "
                         f"use 127.0.0.1, or 0.0.0.0 for every interface") from err
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # as uvicorn binds: a port held only by closed connections (TIME_WAIT) counts as free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as err:
            return err
        return sock.getsockname()[1]


def free_port(host: str = DEFAULT_HOST, start: int = 0) -> int:
    """A port that `host` can listen on: the first free one from `start` (5001, else 5002,
    ...), or the kernel's choice if `start` is 0; UsageError if `host` cannot listen at all."""
    for port in range(start, min(start + 100, 65536)) if start else ():
        if isinstance(_bind(host, port), int):
            return port
    return pick_port(host, 0)


def pick_port(host: str, port: int) -> int:
    """`port` (0: a free one) if `host` can listen on it now; else UsageError, suggesting one."""
    found = _bind(host, port)
    if isinstance(found, int):
        return found
    if found.errno == errno.EADDRINUSE:
        raise UsageError(f"port {port} on {host} is already in use (another MLflow UI?); "
                         f"pick another with --port {free_port(host, port + 1)}, "
                         f"or --port 0 for any free port")
    if found.errno == errno.EACCES:  # ports below 1024 need root
        raise UsageError(f"no permission to listen on port {port}; use a port above 1023, "
                         f"e.g. --port {DEFAULT_PORT}")
    raise UsageError(f"cannot listen on {host}:{port}: {found.strerror}; check --host")


# The database schemes `mlflow server --backend-store-uri` takes (SQLAlchemy dialects,
# optionally with a driver: `postgresql+psycopg2://`), besides a local folder.
SERVABLE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def check_servable(tracking_uri: str, *, ui: bool = True) -> None:
    """UsageError, before a server starts (seconds), for a store `mlflow server` refuses:
    an unknown scheme, or a file store (MLflow 3 serves those only with
    MLFLOW_ALLOW_FILE_STORE=true). `ui`: for `cifarctl ui`, which also opens an http(s)://
    server's own UI; `cifarctl server` (False) serves databases only."""
    scheme = urllib.parse.urlparse(tracking_uri).scheme.split("+")[0]
    if scheme in ("", "file"):
        local = Path(urllib.parse.urlparse(tracking_uri).path if scheme else tracking_uri)
        if local.is_file():
            raise UsageError(f"{tracking_uri} is a file, not a store folder; an SQLite "
                             f"store is given as --tracking-uri sqlite:///PATH")
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
            raise UsageError(f"{tracking_uri} is a folder (file) store, which mlflow server "
                             f"no longer serves: migrate it to sqlite with `mlflow "
                             f"migrate-filestore`, or set MLFLOW_ALLOW_FILE_STORE=true")
    elif scheme not in SERVABLE_SCHEMES:
        others = ", ".join(f"{s}://..." for s in SERVABLE_SCHEMES[1:])
        raise UsageError(f"cannot serve {tracking_uri}: " + (
            f"the UI serves sqlite:///PATH, {others} or an http(s):// server's own UI" if ui
            else f"a shared server serves sqlite:///PATH or {others}"))


def server_command(tracking_uri: str, host: str, port: int) -> list[str]:
    """The `mlflow server` command line that serves `tracking_uri` (a resolved, non-HTTP URI)."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri]
    root = artifact_root(tracking_uri)
    if root is not None:
        # experiments made in the UI keep their artifacts where `train` keeps them
        command += ["--default-artifact-root", str(root)]
    return command + ["--host", host, "--port", str(port), "--workers", str(WORKERS)]


# A Python exception's last traceback line ("sqlite3.DatabaseError: file is not a database")
# or a log record at level ERROR/CRITICAL ("2026/01/01 12:00:00 ERROR: [Errno 98] ...").
_ERROR_LINE = re.compile(r"(?:^|\s)(?:[A-Za-z_][\w.]*(?:Error|Exception)|ERROR|CRITICAL):")


def _last_error_line(log: Path) -> str:
    """The line of a server log that says why it stopped: its last error, else its last line."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()] or ["no server output"]
    return next((line for line in reversed(lines) if _ERROR_LINE.search(line)), lines[-1])


def _get(url: str, timeout: float = 2.0) -> bytes:
    import urllib.request  # 30 ms: kept out of `cifarctl --help`

    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def experiment_page(server: str, name: str) -> str:
    """The runs page of experiment `name` on the MLflow server at `server`
    (`http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning`);
    UsageError, listing the experiments there, if it has no experiment of that name."""
    query = urllib.parse.urlencode({"experiment_name": name})
    try:
        body = _get(f"{server}/ajax-api/2.0/mlflow/experiments/get-by-name?{query}")
    except urllib.error.HTTPError as err:
        if err.code != 404:
            raise CifarctlError(f"MLflow server error looking up experiment {name!r}: "
                                f"HTTP {err.code}") from err
        listing = json.loads(_get(f"{server}/ajax-api/2.0/mlflow/experiments/search"
                                  f"?max_results=1000"))
        names = sorted(e["name"] for e in listing.get("experiments", []))
        raise UsageError(f"no experiment {name!r} at {server}; experiments: "
                         f"{', '.join(names) or 'none yet'}") from err
    experiment_id = json.loads(body)["experiment"]["experiment_id"]
    return f"{server}/#/experiments/{experiment_id}/runs?{RUNS_VIEW}"


@dataclass
class UiServer(contextlib.AbstractContextManager):
    """A running `mlflow server` (see `start_ui`); a context manager that stops it on exit."""

    url: str  # http://127.0.0.1:5000, no trailing slash
    process: subprocess.Popen
    log: Path  # the server's stdout and stderr
    _stopped: bool = field(default=False, repr=False)

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def wait(self) -> None:
        """Block until the server exits (CifarctlError with its last error line) or Ctrl-C."""
        code = self.process.wait()
        if not self._stopped:
            raise CifarctlError(f"MLflow server exited (code {code}): "
                                f"{_last_error_line(self.log)}; full log: {self.log}")

    def stop(self) -> None:
        """SIGTERM to the server's group, SIGKILL after a grace period (or a second Ctrl-C);
        the log is removed after a clean stop, kept after a failure."""
        if self._stopped:
            return
        self._stopped = True
        clean = self.process.poll() is None
        try:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                clean = False
        finally:
            # whatever is left of the group (a worker that ignored SIGTERM) goes now
            self._signal_group(signal.SIGKILL)
            self.process.wait()
        if clean:
            self.log.unlink(missing_ok=True)

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)  # the group id is the leader's pid (setsid)


def start_ui(tracking_uri: str | None = None, *, host: str = DEFAULT_HOST,
             port: int = DEFAULT_PORT, timeout: float = START_TIMEOUT_S) -> UiServer:
    """Start `mlflow server` on the resolved local store (port 0: any free port); return once
    /health answers. UsageError for an HTTP store (already a server), a port in use or a bad
    host; CifarctlError, with the server's last error line, if it dies or hangs while starting."""
    uri = resolve_tracking_uri(tracking_uri)
    if is_server(uri):
        raise UsageError(f"the tracking store {uri} is a server already; open it in a browser")
    check_store(uri)
    check_servable(uri)
    port = pick_port(host, port)
    return launch(server_command(uri, host, port), host=host, port=port, timeout=timeout)


def launch(command: list[str], *, host: str, port: int, env: dict[str, str] | None = None,
           timeout: float = START_TIMEOUT_S) -> UiServer:
    """Run an `mlflow server` command line (`env` on top of ours and the user's); return
    once /health answers. `cifarctl server` starts its shared server through this too."""
    fd, log = tempfile.mkstemp(prefix="cifarctl-ui-", suffix=".log")
    env = {**SERVER_ENV, **os.environ, **(env or {})}
    with os.fdopen(fd, "wb") as log_file:
        # own session: a terminal's Ctrl-C reaches us only, and we stop the whole group
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                   stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    ui = UiServer(url=f"http://{_url_host(host)}:{port}", process=process, log=Path(log))
    try:
        _wait_healthy(ui, timeout)
    except BaseException:
        ui.stop()
        raise
    return ui


def _wait_healthy(ui: UiServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = ui.process.poll()
        if code is not None:
            line = _last_error_line(ui.log)
            if "address already in use" in line.lower():  # taken since pick_port looked
                ui.log.unlink(missing_ok=True)
                raise UsageError(f"port {ui.url.rsplit(':', 1)[1]} was taken while the server "
                                 f"started; pick another --port, or --port 0 for any free port")
            raise CifarctlError(f"MLflow server failed to start (code {code}): {line}; "
                                f"full log: {ui.log}")
        try:
            if _get(f"{ui.url}/health").strip() == b"OK":
                return
        except (urllib.error.URLError, OSError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise CifarctlError(f"MLflow server did not answer {ui.url}/health within "
                                f"{timeout:.0f} s: {_last_error_line(ui.log)}; "
                                f"full log: {ui.log}")
        time.sleep(POLL_S)


def serve_until_stopped(start: Callable[[], UiServer], announce: Callable[[UiServer], None],
                        echo: Callable[[str], None]) -> None:
    """`start()` a server, `announce` it, serve until it dies or Ctrl-C stops it ("stopped").
    SIGTERM and SIGHUP raise KeyboardInterrupt as Ctrl-C does, so one path stops the server."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()  # the only one signals reach
    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP) if main}
    try:
        with start() as server:
            announce(server)
            server.wait()
    except KeyboardInterrupt:
        echo("stopped")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def serve(tracking_uri: str | None = None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          experiment: str | None = None, open_browser: bool = False,
          echo: Callable[[str], None] = print) -> None:
    """`cifarctl ui`: start the UI, say where it is, serve until Ctrl-C/SIGTERM, stop cleanly.
    For an HTTP store nothing is started: its URL is printed (and opened) once it answers."""
    import webbrowser

    uri = resolve_tracking_uri(tracking_uri)
    if is_server(uri):
        check_reachable(uri)
        page = experiment_page(uri, experiment) if experiment else uri
        echo(f"the tracking store {uri} is an MLflow server already: its UI is {page}")
        if open_browser:
            webbrowser.open(page)
        return
    check_store(uri)
    check_servable(uri)
    if experiment:
        check_experiment(uri, experiment)  # not seconds later, from a running server
    port = pick_port(host, port)  # before saying anything about starting
    root = artifact_root(uri)
    echo(f"MLflow UI for {uri}" + (f" (artifacts in {root})" if root else ""))
    echo(f"starting mlflow server on {host}:{port} (seconds) ...")

    def announce(ui: UiServer) -> None:
        page = experiment_page(ui.url, experiment) if experiment else ui.url
        echo(f"ready: {page}")
        if host not in LOOPBACK:
            echo(f"  listening on {host}: whoever reaches this machine sees your runs")
        echo('  MLflow 3 opens in its GenAI view: where a page shows traces, not runs, '
             'choose "Model training" at the top left (once: the browser remembers)')
        echo(f"  server log: {ui.log}; Ctrl-C stops the server")
        if open_browser and not webbrowser.open(page):
            echo("  (no browser found to open; open the URL yourself)")

    serve_until_stopped(lambda: start_ui(uri, host=host, port=port), announce, echo)
