"""`cifarctl data download` against a local HTTP server: md5 checks, truncation, no half caches."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from data_fixtures import assert_one_line_error, run_cli, tar_gz, tiny_arrays

from cifarctl.data import cifar_batches, load_dataset

TARBALL = "cifar-10-python.tar.gz"


class _Handler(SimpleHTTPRequestHandler):
    """Serves `www`; `/cut/<name>` promises the whole file but hangs up halfway."""

    www: Path

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(self.www), **kwargs)

    def do_GET(self):
        if not self.path.startswith("/cut/"):
            return super().do_GET()
        blob = (self.www / self.path.removeprefix("/cut/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(blob)))
        self.end_headers()
        self.wfile.write(blob[: len(blob) // 2])
        self.close_connection = True

    def log_message(self, *args):  # keep the test output clean
        pass


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up early (it saw enough, or the md5 failed) is not a server error:
    the default handler would print a traceback to stderr, which the CLI runner captures."""

    def handle_error(self, request, client_address):
        pass


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A CIFAR-style tarball (synthetic pixels) on a local HTTP server; returns (url, md5)."""
    www = tmp_path / "www"
    www.mkdir()
    cifar_batches.write(tmp_path / "cifar-10-batches-py", tiny_arrays(train_per_class=5))
    tarball = tar_gz(tmp_path / "cifar-10-batches-py", www / TARBALL)
    handler = type("Handler", (_Handler,), {"www": www})
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", hashlib.md5(tarball.read_bytes()).hexdigest()
    server.shutdown()
    server.server_close()


def _point_at(monkeypatch, url: str, md5: str) -> None:
    monkeypatch.setenv("CIFARCTL_CIFAR10_URL", url)
    monkeypatch.setenv("CIFARCTL_CIFAR10_MD5", md5)


# Port 1 (tcpmux) has no listener here: a refused connection, with no race against other
# processes that might grab a port we freed.
UNREACHABLE = f"http://127.0.0.1:1/{TARBALL}"


def test_download_with_matching_md5_is_cached(data_home, mirror, monkeypatch):
    base, md5 = mirror
    _point_at(monkeypatch, f"{base}/{TARBALL}", md5)
    result = run_cli("data", "download", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["classes"] == ["cat", "ant", "bee"]  # from batches.meta, not sorted
    assert summary["train"] == {"count": 15, "per_class": [5, 5, 5]}
    assert summary["path"] == str(data_home / "cifar10.npz")
    assert sorted(p.name for p in data_home.iterdir()) == ["cifar10.npz"]  # download removed

    # Cached: no network needed any more.
    _point_at(monkeypatch, UNREACHABLE, md5)
    data = load_dataset("cifar10")
    assert data.fingerprint == summary["fingerprint"] and data.name == "cifar10"


def test_dataset_cifar10_downloads_when_missing(data_home, mirror, monkeypatch):
    base, md5 = mirror
    _point_at(monkeypatch, f"{base}/{TARBALL}", md5)
    data = load_dataset("cifar10")
    assert len(data.train_labels) == 15 and data.path == data_home / "cifar10.npz"


@pytest.mark.parametrize("case, fragment", [
    ("wrong_md5", "expected 00000000000000000000000000000000"),
    ("truncated_file", "truncated or corrupt"),
    ("connection_cut", "truncated"),  # short read or md5 mismatch, whichever urllib sees
    ("not_found", "HTTP Error 404"),
    ("unreachable", "or use a local copy with --dataset PATH"),
])
def test_failed_download_is_one_line_and_caches_nothing(case, fragment, data_home, mirror,
                                                        monkeypatch, tmp_path):
    base, md5 = mirror
    url = f"{base}/{TARBALL}"
    if case == "wrong_md5":
        md5 = "0" * 32
    elif case == "truncated_file":  # the mirror holds a cut file; the md5 is the whole one's
        served = tmp_path / "www" / TARBALL
        served.write_bytes(served.read_bytes()[:-100])
    elif case == "connection_cut":
        url = f"{base}/cut/{TARBALL}"
    elif case == "not_found":
        url = f"{base}/nothing-here.tar.gz"
    else:
        url = UNREACHABLE
    _point_at(monkeypatch, url, md5)
    assert_one_line_error(run_cli("data", "download"), 1, fragment)
    assert list(data_home.iterdir()) == []  # no cache, no temporary download


def test_a_mirror_file_that_is_no_cifar_release_is_named_by_its_url(data_home, mirror,
                                                                    monkeypatch, tmp_path):
    """Its md5 matches (the user gave the file's own), but it is no archive: the error named
    the deleted temporary file; now the URL."""
    base, _ = mirror
    served = tmp_path / "www" / "page.tar.gz"
    served.write_bytes(b"<html>a login page</html>")
    url = f"{base}/page.tar.gz"
    _point_at(monkeypatch, url, hashlib.md5(served.read_bytes()).hexdigest())
    line = assert_one_line_error(run_cli("data", "download"), 2, f"error: {url}: the downloaded "
                                 "file is neither a directory nor a .tar.gz archive; is "
                                 "$CIFARCTL_CIFAR10_URL the CIFAR-10 python release?")
    assert "download.tmp-" not in line
    assert list(data_home.iterdir()) == []


def test_a_file_url_mirror_is_copied_and_checked(data_home, mirror, monkeypatch, tmp_path):
    """A copy on a shared disk: `file://` works like http (md5 checked), and a missing file
    is one line, not urllib's AttributeError."""
    _, md5 = mirror
    local = tmp_path / "www" / TARBALL
    _point_at(monkeypatch, local.as_uri(), md5)
    data = load_dataset("cifar10")
    assert len(data.train_labels) == 15
    (data_home / "cifar10.npz").unlink()
    _point_at(monkeypatch, (tmp_path / "nowhere.tar.gz").as_uri(), md5)
    assert_one_line_error(run_cli("data", "download"), 1, "could not copy file://")
    _point_at(monkeypatch, local.as_uri(), "0" * 32)
    assert_one_line_error(run_cli("data", "download"), 1, "expected 00000000")
    assert list(data_home.iterdir()) == []


def test_an_md5_without_its_url_is_refused(data_home, monkeypatch):
    monkeypatch.setenv("CIFARCTL_CIFAR10_MD5", "0" * 32)
    assert_one_line_error(run_cli("data", "download"), 1, "set both, or unset it")
