"""`cifarctl ui` (issue 9): the server it starts, the errors it reports, how it stops.

The real-browser test is in test_ui_browser.py; it reuses `UiProcess` from here. Tests that
start `mlflow server` take 10-20 s each on two busy cores (the server imports MLflow), so
they are marked slow.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifarctl.cli import app
from cifarctl.tracking import resolve_tracking_uri
from cifarctl.ui import SERVER_ENV, free_port, server_command

READY_TIMEOUT_S = 240  # `mlflow server` start-up on a loaded 2-core CI machine, generously


def run_ui(*args: str):
    return CliRunner().invoke(app, ["ui", *args])


def assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in errors[0], result.output


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _state(stat: Path) -> tuple[str, int] | None:
    """(state letter, parent pid) from /proc/<pid>/stat; None once the process is gone."""
    try:
        # the command name may hold spaces and parentheses: split after its last ")"
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (a zombie has exited: only its parent has not reaped it)."""
    return {pid for pid in pids
            if (state := _state(Path(f"/proc/{pid}/stat"))) and state[0] != "Z"}


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc (children, grandchildren, ...)."""
    parents = {int(entry.name): state[1] for entry in Path("/proc").iterdir()
               if entry.name.isdigit() and (state := _state(entry / "stat"))
               and state[0] != "Z"}
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


class UiProcess:
    """`cifarctl ui ARGS` as a real subprocess in its own session (signals reach it alone)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cifarctl", "ui", *args], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})},
            start_new_session=True)
        self.lines: list[str] = []
        self.tree: set[int] = set()  # its processes once ready, for `kill`

    def wait_ready(self) -> str:
        """The URL on the `ready:` line, once all start-up lines are out; fails with the
        output if the command ends first."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if "Ctrl-C stops the server" in line:
                self.tree = descendants(self.process.pid)
                return next(x for x in self.lines if x.startswith("ready: ")).split(" ", 1)[1]
            assert time.monotonic() < deadline, "\n".join(self.lines)
        self.process.wait()
        raise AssertionError(f"exit {self.process.returncode}:\n" + "\n".join(self.lines))

    def stop(self, signum: int) -> tuple[int, str]:
        """Send `signum`, wait for the exit; (exit code, the rest of the output)."""
        self.process.send_signal(signum)
        rest, _ = self.process.communicate(timeout=60)
        self.lines += rest.splitlines()
        return self.process.returncode, rest

    def kill(self) -> None:
        """Clean-up after a failed test: the whole tree, whatever state it is in."""
        for pid in alive(self.tree | descendants(self.process.pid)) | {self.process.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()


# ---- no server needed --------------------------------------------------------------------

def test_server_serves_the_store_training_writes(mlflow_store):
    command = server_command(resolve_tracking_uri(None), "127.0.0.1", 5123)
    assert command[:4] == [sys.executable, "-m", "mlflow", "server"]
    options = dict(zip(command[4::2], command[5::2]))
    assert options == {"--backend-store-uri": mlflow_store.uri,
                       "--default-artifact-root": str(mlflow_store.artifacts),
                       "--host": "127.0.0.1", "--port": "5123", "--workers": "1"}
    assert SERVER_ENV["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_port_in_use_exits_2_and_suggests_a_free_one(mlflow_store):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_ui("--port", str(port))
        assert_one_line_error(result, 2, f"port {port} on 127.0.0.1 is already in use",
                              "--port 0")
        suggested = int(result.output.split("pick another with --port ")[1].split(",")[0])
        assert suggested > port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", suggested))  # the suggestion is really free
    assert "ready: " not in result.output and "starting" not in result.output


def test_a_store_that_does_not_exist_exits_2_and_creates_nothing(tmp_path):
    missing = tmp_path / "typo" / "mlflow.db"
    assert_one_line_error(run_ui("--tracking-uri", f"sqlite:///{missing}"), 2,
                          f"no MLflow store at {missing}", "--tracking-uri")
    assert not missing.parent.exists()


@pytest.mark.parametrize("uri, message", [
    ("JUNK", "is not an SQLite database, so not an MLflow store"),
    ("OTHER_DB", "is an SQLite database of something else (no MLflow tables)"),
    ("foo://bar", "cannot serve foo://bar: the UI serves sqlite:///PATH"),
    ("FOLDER", "is a folder (file) store, which mlflow server no longer serves"),
    ("TEXT", "is a file, not a store folder; an SQLite store is given as"),
])
def test_a_store_no_server_can_serve_is_refused_before_one_starts(tmp_path, monkeypatch, uri,
                                                                   message):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    if uri == "JUNK":
        (tmp_path / "notes.db").write_text("not a database")
        uri = f"sqlite:///{tmp_path / 'notes.db'}"
    elif uri == "FOLDER":
        uri = f"file://{tmp_path}"
    elif uri == "TEXT":
        (tmp_path / "notes.txt").write_text("not a store")
        uri = str(tmp_path / "notes.txt")
    elif uri == "OTHER_DB":
        import sqlite3

        with sqlite3.connect(tmp_path / "photos.db") as conn:
            conn.execute("CREATE TABLE photos (name TEXT)")
        before = (tmp_path / "photos.db").read_bytes()
        uri = f"sqlite:///{tmp_path / 'photos.db'}"
    result = run_ui("--tracking-uri", uri, "--port", "0")
    assert_one_line_error(result, 2, message)
    assert "starting" not in result.output
    if "photos.db" in uri:  # MLflow's tables were not added to someone else's database
        assert (tmp_path / "photos.db").read_bytes() == before


def test_host_that_is_not_ours_exits_2(mlflow_store):
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): a valid address that no machine here has
    assert_one_line_error(run_ui("--host", "192.0.2.1", "--port", "0"), 2,
                          "cannot listen on 192.0.2.1", "check --host")


def test_an_http_store_is_already_a_server(mlflow_store):
    class Server(http.server.BaseHTTPRequestHandler):  # /health and one experiment
        def do_GET(self):
            found = {"/health": b"OK", "/ajax-api/2.0/mlflow/experiments/get-by-name"
                     "?experiment_name=lt100": b'{"experiment": {"experiment_id": "7"}}'}
            self.send_response(200 if self.path in found else 404)
            self.end_headers()
            self.wfile.write(found.get(self.path, b""))

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        home = run_ui("--tracking-uri", url + "/")
        runs = run_ui("--tracking-uri", url, "--experiment", "lt100")
    finally:
        server.shutdown()
        server.server_close()
    assert home.exit_code == 0, home.output
    assert f"{url} is an MLflow server already: its UI is {url}\n" in home.output
    assert runs.exit_code == 0, runs.output
    assert f"its UI is {url}/#/experiments/7/runs?workflowType=machine_learning" in runs.output
    assert_one_line_error(run_ui("--tracking-uri", url), 2, "cannot reach MLflow tracking "
                                                            f"server at {url}")


# ---- a real `mlflow server` -----------------------------------------------------------------

@pytest.mark.slow
def test_server_dying_at_start_up_reports_its_error_line(mlflow_store):
    import sqlite3

    # a database whose schema version no MLflow knows: only the server's migration fails
    mlflow_store.db.unlink()
    with contextlib.closing(sqlite3.connect(mlflow_store.db)) as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        db.execute("INSERT INTO alembic_version VALUES ('ffffffffffff')")
        db.commit()
    result = run_ui("--port", "0")
    assert_one_line_error(result, 1, "MLflow server failed to start",
                          "Can't locate revision identified by 'ffffffffffff'", "full log: ")
    log = Path(result.output.split("full log: ")[1].split()[0])
    assert log.is_file()  # kept for the user to read
    log.unlink()


@pytest.mark.slow
def test_sigterm_stops_the_server_and_its_children(mlflow_store, tmp_path):
    from cifarctl.tracking.mlflow_tracker import connect, get_or_create_experiment

    experiment_id = get_or_create_experiment(connect(), "tiny")
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"  # $BROWSER: what `webbrowser.open` runs, here a recorder
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    ui = UiProcess("--port", "0", "--experiment", "tiny", "--open",
                   env={"BROWSER": f"{browser} %s"})
    try:
        url = ui.wait_ready()
        base, route = url.split("/#/")
        port = int(base.rsplit(":", 1)[1])
        assert route == f"experiments/{experiment_id}/runs?workflowType=machine_learning"
        assert listening(port)
        tree = ui.tree
        assert len(tree) >= 2, tree  # mlflow's CLI process and its uvicorn server
        log = Path(next(line for line in ui.lines if "server log: " in line)
                   .split("server log: ")[1].split(";")[0])
        assert log.is_file()
        deadline = time.monotonic() + 10
        # the shell creates the file before echo writes into it: wait for the line
        while (not opened.exists() or not opened.read_text().endswith("\n")) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert opened.read_text().strip() == url
        code, rest = ui.stop(signal.SIGTERM)
    except BaseException:
        ui.kill()
        raise
    assert code == 0 and rest.strip().endswith("stopped"), "\n".join(ui.lines)
    assert not listening(port)
    assert not alive(tree), tree
    assert not log.exists()  # a clean stop leaves no log behind


def test_unknown_experiment_exits_2_listing_the_known_ones(mlflow_store):
    """Read from the SQLite store before any server starts (was: seconds later)."""
    from cifarctl.tracking.mlflow_tracker import connect, get_or_create_experiment

    get_or_create_experiment(connect(), "lt100")
    port = free_port()
    result = run_ui("--port", str(port), "--experiment", "lt10")
    assert_one_line_error(result, 2, "no experiment 'lt10'",
                          "experiments: Default, lt100 (did you mean 'lt100'?)")
    assert "starting" not in result.output and not listening(port)
