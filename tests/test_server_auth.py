"""`cifarctl server --auth` for real (issue 20): a `cifarctl server` process on a sqlite store
with MLflow's basic-auth app, bound to every interface as the README's cluster steps start it,
reached over HTTP as clients reach it.

One server for the module (its start is most of the test time: 10-40 s on two busy cores);
the module's last test stops it and checks what it leaves behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cluster_fixtures import free_port

from cifarctl.errors import CifarctlError, UsageError

PASSWORD = "correct-horse-battery"  # MLflow wants 12 characters or more
ADMIN = "lead"  # the admin's name comes from $MLFLOW_TRACKING_USERNAME
START_TIMEOUT_S = 240


@dataclass
class Served:
    url: str  # http://127.0.0.1:PORT
    port: int
    process: subprocess.Popen
    lines: list[str]  # its output so far
    tmp: Path  # its TMPDIR

    reader: threading.Thread  # copies its output into `lines`

    def wait_for(self, text: str, timeout: float) -> None:
        """Until a line of its output holds `text`; fails if it exits or times out first."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None:
                self.reader.join(10)  # its last lines
                assert any(text in line for line in self.lines), "".join(self.lines)
                return
            assert time.monotonic() < deadline, f"no {text!r} in {timeout} s: {self.lines}"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """`cifarctl server --auth --host 0.0.0.0` on a new sqlite store, as a user starts it,
    also answering to the name `head.example`."""
    folder = tmp_path_factory.mktemp("auth-server")
    (folder / "tmp").mkdir()
    port = free_port()
    env = {**os.environ, "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
           "MLFLOW_TRACKING_USERNAME": ADMIN, "TMPDIR": str(folder / "tmp")}
    for name in ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_TRACKING_PASSWORD",
                 "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    command = [sys.executable, "-m", "cifarctl", "server", "--store",
               f"sqlite:///{folder / 'mlflow.db'}", "--artifacts", str(folder / "artifacts"),
               "--host", "0.0.0.0", "--port", str(port), "--auth", "--workers", "1",
               "--allowed-hosts", "head.example"]
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []

    def read() -> None:
        for line in process.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    server = Served(f"http://127.0.0.1:{port}", port, process, lines, folder / "tmp", reader)
    try:
        server.wait_for("ready:", START_TIMEOUT_S)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.slow
def test_the_admin_logs_in_with_the_password_the_server_started_with(served, monkeypatch):
    """The README's step 2 never started: MLflow 3.17's auth app wants a CSRF secret key."""
    import requests
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    client = MlflowClient(served.url)
    run = client.create_run(client.create_experiment("auth-check"))
    client.log_metric(run.info.run_id, "val_acc", 0.5)
    assert client.get_run(run.info.run_id).data.metrics == {"val_acc": 0.5}
    users = f"{served.url}/api/2.0/mlflow/users/get"
    answer = requests.get(users, params={"username": ADMIN}, auth=(ADMIN, PASSWORD), timeout=30)
    assert answer.status_code == 200 and answer.json()["user"]["is_admin"] is True
    assert requests.get(users, params={"username": ADMIN}, timeout=30).status_code == 401


@pytest.mark.slow
def test_the_server_answers_to_this_machines_names_and_to_allowed_hosts(served):
    """MLflow 3 answered 403 to a cluster that named its head by host name (http://head:5000),
    so nothing could be logged; 127.0.0.1 and private IPs are MLflow's defaults."""
    import base64
    import urllib.error
    import urllib.request

    from cifarctl.tracking.store import ACCESS_PROBE

    login = base64.b64encode(f"{ADMIN}:{PASSWORD}".encode()).decode()

    def status(host: str) -> tuple[int, str]:
        request = urllib.request.Request(served.url + ACCESS_PROBE, headers={
            "Host": f"{host}:{served.port}", "Authorization": f"Basic {login}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, ""
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    assert status("head.example") == (200, "")
    assert status(socket.gethostname()) == (200, "")
    assert status("127.0.0.1") == (200, "")
    assert status("elsewhere.example") == (403, "Invalid Host header - possible DNS "
                                                "rebinding attack detected")


@pytest.mark.slow
@pytest.mark.parametrize("password", [None, "nope"])
def test_credentials_the_server_refuses_are_one_line_for_every_command(served, tmp_path,
                                                                       monkeypatch, password):
    """`MLFLOW_TRACKING_PASSWORD=nope cifarctl sweep/report/train` printed a 155-line
    traceback ending in MLflow's '401 != 200 ... You are not authenticated'."""
    from typer.testing import CliRunner

    from cifarctl.cli import app

    monkeypatch.chdir(tmp_path)
    env = {"MLFLOW_TRACKING_USERNAME": ADMIN if password else None,
           "MLFLOW_TRACKING_PASSWORD": password, "MLFLOW_TRACKING_TOKEN": None}
    whose = f"the credentials of user {ADMIN}" if password else "a request without credentials"
    wanted = (f"error: the tracking server at {served.url} refused {whose} (401); set "
              f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text("base: {model: {name: vanillacnn}, data: {dataset: synthetic}}\n"
                    "grid: {seed: [0, 1]}\n")
    for args in (["report"], ["train", "vanillacnn", "--dataset", "synthetic", "--epochs", "1"],
                 ["sweep", str(spec)]):
        result = CliRunner().invoke(app, [*args, "--tracking-uri", served.url], env=env)
        assert (result.exit_code, result.output) == (2, wanted), args


@pytest.mark.slow
def test_a_server_on_every_interface_names_a_url_other_machines_can_use(served):
    """`--host 0.0.0.0` said `ready: http://127.0.0.1:PORT (pass --tracking-uri ... on every
    machine)`: the one address every other machine gets wrong."""
    import re
    import urllib.parse
    import urllib.request

    ready = next(line for line in served.lines if line.startswith("ready:"))
    said = re.fullmatch(r"ready: (\S+)  \(pass --tracking-uri (\S+), or set "
                        r"MLFLOW_TRACKING_URI, on every machine\)\n", ready)
    assert said and said.group(1) == said.group(2), ready
    url = said.group(1)
    host = urllib.parse.urlparse(url).hostname
    assert not host.startswith("127.") and host != "localhost", url
    assert urllib.parse.urlparse(url).port == served.port
    with urllib.request.urlopen(f"{url}/health", timeout=30) as answer:  # it answers there
        assert answer.read() == b"OK"


def test_allowed_hosts_extend_mlflows_defaults_at_any_port(monkeypatch):
    from cifarctl.server import allowed_hosts, check_allowed, server_command

    monkeypatch.delenv("MLFLOW_SERVER_ALLOWED_HOSTS", raising=False)
    assert allowed_hosts("127.0.0.1") is None  # MLflow's defaults: localhost, private IPs
    local = allowed_hosts("127.0.0.1", ["Head", "10.1.2.3:8080"])
    assert local[:2] == ["localhost", "127.0.0.1"] and "10.*" in local
    assert local[-5:] == ["Head", "Head:*", "head", "head:*", "10.1.2.3:8080"]
    shared = allowed_hosts("0.0.0.0")
    assert f"{socket.gethostname()}:*" in shared and "localhost:*" in shared
    assert allowed_hosts("0.0.0.0", ["*"]) == ["*"]
    monkeypatch.setenv("MLFLOW_SERVER_ALLOWED_HOSTS", "mine.example")  # the user's own
    assert allowed_hosts("0.0.0.0") is None
    with pytest.raises(UsageError, match="^--allowed-hosts takes host names separated by "
                                         "commas .*, got 'http://head:5000'$"):
        check_allowed(["http://head:5000"])
    command = server_command("sqlite:///m.db", Path("a"), host="0.0.0.0", port=5000,
                             auth=True, allowed=["head", "head:*"])
    assert command[-4:] == ["--allowed-hosts", "head,head:*", "--app-name", "basic-auth"]


def test_an_admin_password_mlflow_would_refuse_is_one_line_up_front(tmp_path, monkeypatch):
    from cifarctl.server import check_auth

    users = f"sqlite:///{tmp_path / 'users.db'}"
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "short")
    with pytest.raises(UsageError) as err:
        check_auth(users)
    assert str(err.value) == ("--auth: MLFLOW_AUTH_ADMIN_PASSWORD has 5 characters; MLflow "
                              "wants at least 12 for the admin account")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", PASSWORD)
    check_auth(users)


@pytest.mark.slow  # MLflow refuses the password only once its CLI process has imported itself
def test_a_failed_auth_start_leaves_neither_a_user_store_nor_its_settings(tmp_path,
                                                                          monkeypatch):
    """The user store a failed start made held no admin, and `check_auth` skipped its checks
    for an existing store: the next start, without a password, failed inside MLflow again."""
    from cifarctl.server import check_auth, start_server

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where its settings would stay
    # 12 characters, so check_auth lets it through, but MLflow refuses the password that older
    # versions shipped (GHSA-gq3w-7jj3-x7gr) after it has created the user store
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "password1234")
    users = tmp_path / "users.db"
    with pytest.raises(CifarctlError, match="^MLflow server failed to start"):
        start_server(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", port=0,
                     auth=True, auth_db=f"sqlite:///{users}", workers=1)
    assert not users.exists()
    assert not list(tmp_path.glob("cifarctl-server-*"))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD")
    with pytest.raises(UsageError, match="^--auth: set MLFLOW_AUTH_ADMIN_PASSWORD"):
        check_auth(f"sqlite:///{users}")


@pytest.mark.slow
def test_stopping_the_server_removes_its_auth_settings(served):
    """The module's last test: SIGTERM stops the server cleanly, and the folder of its
    basic-auth settings goes with it (each start left one in /tmp)."""
    assert list(served.tmp.glob("cifarctl-server-*"))  # there while it runs
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=60) == 0
    served.wait_for("stopped", 10)
    assert not list(served.tmp.glob("cifarctl-server-*"))
