"""A tracking server that answers, but not with what a client needs: one line each, never
MLflow's traceback. The servers are real HTTP servers on this machine, answering MLflow's
client (and `check_reachable`) what MLflow 3.17's server answers in each case: its Host-name
guard's 403.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from cifarctl.cli import app
from cifarctl.errors import UsageError
from cifarctl.tracking.retry import call_with_retry
from cifarctl.tracking.store import check_reachable

# what MLflow 3.17's HostValidationMiddleware answers (mlflow.server.security_utils)
INVALID_HOST_MSG = "Invalid Host header - possible DNS rebinding attack detected"

Answer = tuple[int, str]  # status, plain-text body


@contextlib.contextmanager
def answering(answer: Callable[[str], Answer]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 whose every answer is `answer(path)`; its URL. /health
    answers OK, as MLflow's does whatever else it refuses."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
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
