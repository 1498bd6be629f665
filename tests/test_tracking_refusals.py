"""A tracking server that answers, but not with what a client needs: one line each, never
MLflow's traceback. The servers are real HTTP servers on this machine, answering MLflow's
client (and `check_reachable`) what MLflow 3.17's server answers in each case: its Host-name
guard's 403, its basic-auth app's 401 and 403, and 503 to every retry while its database is
down.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from cifarctl.cli import app
from cifarctl.errors import CifarctlError, UsageError
from cifarctl.tracking.retry import call_with_retry
from cifarctl.tracking.store import check_reachable

# what MLflow 3.17's HostValidationMiddleware answers (mlflow.server.security_utils)
INVALID_HOST_MSG = "Invalid Host header - possible DNS rebinding attack detected"

Answer = tuple[int, str]  # status, plain-text body


@contextlib.contextmanager
def answering(answer: Callable[[str], Answer],
              seen: dict[str, str] | None = None) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 whose every answer is `answer(path)`; its URL. /health
    answers OK, as MLflow's does whatever else it refuses. `seen`: each request's headers
    (lower-case names) are copied into it before it is answered."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            if seen is not None:
                seen.clear()
                seen.update((k.lower(), v) for k, v in self.headers.items())
            status, body = (200, "OK") if self.path == "/health" else answer(self.path)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _reply

        def log_message(self, *args) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_host_name_the_server_refuses_is_one_line_naming_the_fix(tmp_path, monkeypatch):
    """MLflow 3 refuses a Host header that is not localhost or a private IP (a cluster that
    names its head `head`): check_reachable says so before anything runs, and a call that
    meets it later says the same, where MLflow raised its 403 as a traceback."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    with answering(lambda path: (403, INVALID_HOST_MSG)) as url:
        wanted = (f"the tracking server at {url} refuses to be called 127.0.0.1 (HTTP 403: "
                  f"MLflow's guard against DNS rebinding); start it with `cifarctl server "
                  f"--allowed-hosts 127.0.0.1`, or reach it by a private IP address")
        with pytest.raises(UsageError) as err:
            check_reachable(url)
        assert str(err.value) == wanted
        result = CliRunner().invoke(app, ["report", "--tracking-uri", url])
        assert result.exit_code == 2 and result.output == f"error: {wanted}\n", result.output
        with pytest.raises(UsageError) as err:
            call_with_retry(MlflowClient(url).get_run, "0" * 32)
        assert str(err.value) == wanted


# what MLflow 3.17's basic-auth app answers (mlflow.server.auth.make_basic_auth_response)
NOT_AUTHENTICATED = ("You are not authenticated. Please see https://www.mlflow.org/docs/latest/"
                     "auth/index.html#authenticating-to-mlflow on how to authenticate.")
LOGIN = "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"


def test_credentials_the_server_refuses_are_one_line_up_front_and_later(monkeypatch):
    """`MLFLOW_TRACKING_PASSWORD=nope cifarctl report` printed a 155-line traceback ending in
    MLflow's '401 != 200': /health, all check_reachable asked, needs no login."""
    import base64

    from mlflow.tracking import MlflowClient

    def answer(path: str) -> Answer:  # as MLflow's auth app: 401 unless lead logs in
        return (200, '{"experiments": []}') if seen.get("authorization") == good else (
            401, NOT_AUTHENTICATED)

    good = "Basic " + base64.b64encode(b"lead:correct-horse-battery").decode()
    seen: dict[str, str] = {}
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    with answering(answer, seen) as url:
        with pytest.raises(UsageError) as err:
            check_reachable(url)
        assert str(err.value) == (f"the tracking server at {url} refused a request without "
                                  f"credentials (401); {LOGIN}")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "lead")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "nope")
        wanted = (f"the tracking server at {url} refused the credentials of user lead (401); "
                  f"{LOGIN}")
        with pytest.raises(UsageError) as err:
            check_reachable(url)
        assert str(err.value) == wanted
        with pytest.raises(UsageError) as err:  # a password changed while a sweep ran
            call_with_retry(MlflowClient(url).get_run, "0" * 32)
        assert str(err.value) == wanted
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "correct-horse-battery")
        check_reachable(url)
        assert seen["authorization"] == good  # what MLflow's client sends too


def test_a_user_without_the_permission_is_one_line(monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "guest")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "correct-horse-battery")
    with answering(lambda path: (403, "Permission denied")) as url, \
            pytest.raises(UsageError) as err:
        call_with_retry(MlflowClient(url).set_tag, "0" * 32, "k", "v")
    assert str(err.value) == (f"the tracking server at {url} denied user guest this request "
                              f"(403: Permission denied); ask its admin for the permission, "
                              f"or log in as another user: {LOGIN}")


def test_a_server_that_answers_503_to_every_retry_is_lost_in_one_line(tmp_path, monkeypatch):
    """PostgreSQL down for minutes: the server answers 503, MLflow's client gives up ('too many
    503 error responses') and the sweep driver died with a 370-line chained traceback."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from cifarctl.tracking.retry import lost_server
    from cifarctl.tracking.runstore import RunStore

    monkeypatch.chdir(tmp_path)
    for name, value in (("MAX_RETRIES", "1"), ("BACKOFF_FACTOR", "0"), ("BACKOFF_JITTER", "0")):
        monkeypatch.setenv(f"MLFLOW_HTTP_REQUEST_{name}", value)  # seconds, not minutes
    with answering(lambda path: (503, "Service Unavailable")) as url:
        wanted = (f"lost the MLflow tracking server at {url} (it answered 503 to every retry: "
                  f"its database may be down); check the server's log and database and rerun: "
                  f"a run resumes from its last checkpoint (`cifarctl train --resume RUN_ID`, "
                  f"or the same `cifarctl sweep` again)")
        with pytest.raises(CifarctlError) as err:  # what the sweep driver's finish asks
            RunStore(url).get_run("0" * 32)
        assert type(err.value) is not UsageError and str(err.value) == wanted
        with pytest.raises(CifarctlError) as err:
            call_with_retry(MlflowClient(url).set_terminated, "0" * 32, "FAILED")
        assert str(err.value) == wanted
        result = CliRunner().invoke(app, ["report", "--tracking-uri", url])
        assert result.exit_code == 1 and result.output == f"error: {wanted}\n", result.output
        # a Ray task's error comes back pickled, without its chain: MLflow's words suffice
        with pytest.raises(MlflowException) as raised:
            MlflowClient(url).get_run("0" * 32)
        bare = MlflowException(raised.value.message)
        assert str(lost_server(bare)) == wanted
