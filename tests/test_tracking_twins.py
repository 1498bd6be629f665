"""A run created twice by MLflow's own retry is created once.

MLflow's HTTP client retries a request whose answer it lost (a read timeout, a 5xx), POSTs
included: a `runs/create` the server committed is then made again. A sweep trial got two
child runs that way (suspected in a suite run, 2026-12-05). Here a real `cifarctl server`
sits behind a proxy that holds back the answer to the first `runs/create` past the client's
timeout, so the client really does retry.
"""

from __future__ import annotations

import http.server
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


class _SlowFirstCreate(http.server.BaseHTTPRequestHandler):
    """Forwards every request to `backend`; the first `runs/create` is answered late."""

    backend = ""
    held_back = threading.Event()

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        request = urllib.request.Request(self.backend + self.path, data=body,
                                         method=self.command, headers={
                                             k: v for k, v in self.headers.items()
                                             if k.lower() not in ("host", "content-length")})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, payload, kind = answer.status, answer.read(), answer.headers
        except urllib.error.HTTPError as err:
            status, payload, kind = err.code, err.read(), err.headers
        if self.path.endswith("/runs/create") and not self.held_back.is_set():
            self.held_back.set()
            time.sleep(4)  # committed on the server; the client gave up after 1 s
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client left already
            pass

    do_GET = do_POST = do_PATCH = do_DELETE = _forward

    def log_message(self, *args: object) -> None:
        pass


def test_a_run_the_client_created_twice_is_left_once(tmp_path: Path, monkeypatch,
                                                     _mlflow_template_db):
    import shutil

    from mlflow.tracking import MlflowClient

    from cifarctl.server import start_server
    from cifarctl.tracking.mlflow_tracker import start_run

    shutil.copyfile(_mlflow_template_db, tmp_path / "mlflow.db")
    with start_server(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts",
                      port=0) as server:
        _SlowFirstCreate.backend = server.url
        proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowFirstCreate)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        try:
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
            url = f"http://127.0.0.1:{proxy.server_address[1]}"
            tracker = start_run(experiment="twins", tracking_uri=url, run_name="trial")
            assert _SlowFirstCreate.held_back.is_set()  # the client did retry
            client = MlflowClient(server.url)
            experiment = client.get_experiment_by_name("twins").experiment_id
            active = client.search_runs([experiment])
            assert [r.info.run_id for r in active] == [tracker.run_id]
            everything = client.search_runs([experiment], run_view_type=3)  # ALL
            assert len(everything) == 2  # the twin went to the trash
        finally:
            proxy.shutdown()
