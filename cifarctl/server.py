"""`cifarctl server`: a tracking server a team or a Ray cluster can share (issue 20).

    with start_server("postgresql://mlflow@127.0.0.1/mlflow", Path("/srv/artifacts"),
                      port=0) as server:
        print(server.url)          # http://127.0.0.1:40123: --tracking-uri for every machine

MLflow's own server, set up as a shared one should be: runs in a database made for many
writers (PostgreSQL; `postgresql://` needs psycopg: `pip install 'cifarctl[server]'`), and
`--serve-artifacts`, so clients upload and download artifacts through the server (nodes need
no shared disk, no cloud credentials; artifact URIs read `mlflow-artifacts:/...`).

Bound to 127.0.0.1 unless told otherwise. Listening on any other address shares every run
and artifact with whoever reaches the port, so it needs `--auth`: MLflow's basic-auth app
(users and passwords in `--auth-db`; the admin account is created on first start from
`$MLFLOW_AUTH_ADMIN_PASSWORD`; clients send `$MLFLOW_TRACKING_USERNAME` /
`$MLFLOW_TRACKING_PASSWORD`, which `sweep --backend ray` passes on to its tasks). Without it
the command refuses and says why. The auth app also signs its forms with
`$MLFLOW_FLASK_SERVER_SECRET_KEY`: set it for a key that outlives a restart, else each start
makes one. Start, health check and stop are `cifarctl ui`'s.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cifarctl.errors import UsageError
from cifarctl.tracking.store import (
    check_driver,
    check_reachable,
    mlflow_default_hosts,
    sqlite_path,
)
from cifarctl.ui import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    LOOPBACK,
    UiServer,
    check_servable,
    launch,
    pick_port,
    serve_until_stopped,
)

WILDCARD = ("0.0.0.0", "::", "")  # binds that listen on every interface
SERVER_WORKERS = 4  # uvicorn workers: a sweep's trials write at once (MLflow's default)
AUTH_APP = "basic-auth"
MIN_PASSWORD = 12  # MLflow's basic-auth app refuses shorter ones (mlflow.utils.validation)


def check_exposure(host: str, auth: bool) -> None:
    """UsageError for a server on a network address without authentication."""
    if host not in LOOPBACK and not auth:
        raise UsageError(f"--host {host} shares every run and artifact with whoever reaches "
                         f"this machine: add --auth (MLflow's basic-auth app; set "
                         f"MLFLOW_AUTH_ADMIN_PASSWORD), or keep --host 127.0.0.1 and reach it "
                         f"through an SSH tunnel")


def auth_config(auth_db: str, folder: Path) -> Path:
    """The basic-auth app's settings (MLFLOW_AUTH_CONFIG_PATH): its user store `auth_db`,
    the admin's name from `$MLFLOW_TRACKING_USERNAME` (default admin). MLflow reads the
    admin's first password from `$MLFLOW_AUTH_ADMIN_PASSWORD` itself."""
    admin = os.environ.get("MLFLOW_TRACKING_USERNAME") or "admin"
    path = folder / "basic_auth.ini"
    path.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {auth_db}\n"
                    f"admin_username = {admin}\n"
                    f"authorization_function = mlflow.server.auth:"
                    f"authenticate_request_basic_auth\n")
    return path


def check_auth(auth_db: str) -> None:
    """UsageError when the auth app would refuse to start: a new user store without a
    password, or with one MLflow finds too short."""
    db = sqlite_path(auth_db)
    new = db is None or not db.is_file()
    password = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")
    if new and not password:
        raise UsageError("--auth: set MLFLOW_AUTH_ADMIN_PASSWORD, the password the server's "
                         "admin account gets on its first start (clients log in with "
                         "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)")
    if new and len(password) < MIN_PASSWORD:
        raise UsageError(f"--auth: MLFLOW_AUTH_ADMIN_PASSWORD has {len(password)} characters; "
                         f"MLflow wants at least {MIN_PASSWORD} for the admin account")


@dataclass
class SharedServer(UiServer):
    """A running shared server (see `start_server`): stopping it also removes the folder of
    its basic-auth settings, which its workers read while it runs."""

    settings: Path | None = None

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self.settings is not None:
                shutil.rmtree(self.settings, ignore_errors=True)


def launch_with_auth(command: list[str], auth_db: str, *, host: str, port: int) -> UiServer:
    """`command` with MLflow's basic-auth app: its settings in a temporary folder, removed when
    the server stops; a start that fails also removes the sqlite user store it created (an
    empty one would skip `check_auth`'s password check next time)."""
    db = sqlite_path(auth_db)
    created = [] if db is None or db.exists() else [
        db.with_name(db.name + suffix) for suffix in ("", "-journal", "-wal", "-shm")]
    folder = Path(tempfile.mkdtemp(prefix="cifarctl-server-"))
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(auth_config(auth_db, folder))}
    if not os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
        # the auth app signs its CSRF tokens with it and refuses to start without one (MLflow
        # 3.17); one per start, inherited by every worker, so all workers accept each other's
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(32)
    try:
        server = launch(command, host=host, port=port, env=env)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        for path in created:
            path.unlink(missing_ok=True)
        raise
    return SharedServer(url=server.url, process=server.process, log=server.log,
                        settings=folder)


def machine_names(host: str) -> list[str]:
    """The names and addresses other machines may reach this one by, the likeliest first: its
    FQDN and host name (those that resolve to an address other than loopback first), the
    address its default route leaves by, the others its names resolve to; and `host` itself
    unless it is a wildcard. Loopback names are left out."""
    names = list(dict.fromkeys([socket.getfqdn(), socket.gethostname()]))
    resolved: dict[str, list[str]] = {}
    for name in names:
        try:
            resolved[name] = [a for a in socket.gethostbyname_ex(name)[2]
                              if not a.startswith("127.")]
        except OSError:  # a name only DNS elsewhere knows, if any
            resolved[name] = []
    routed = [name for name in names if resolved[name]]
    outgoing = _outgoing_address()
    found = [*routed, *([outgoing] if outgoing else []),
             *(a for addresses in resolved.values() for a in addresses),
             *(name for name in names if name not in routed),
             *([] if host in WILDCARD else [host])]
    return [n for n in dict.fromkeys(found)
            if n and n not in LOOPBACK and not n.startswith("127.")]


def public_url(url: str, host: str) -> str:
    """The URL other machines reach a server by: for a wildcard bind (whose `url` says
    127.0.0.1, for this machine) the likeliest of `machine_names`; else `url` itself."""
    names = machine_names(host) if host in WILDCARD else []
    return f"http://{names[0]}:{url.rsplit(':', 1)[1]}" if names else url


def _outgoing_address() -> str | None:
    """The IPv4 address this machine's default route leaves by (None without one): connecting
    a UDP socket picks the route and sends nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1 (RFC 5737): never a real host
            return probe.getsockname()[0]
        except OSError:
            return None


def check_allowed(extra: Sequence[str]) -> None:
    """UsageError for an `--allowed-hosts` entry that is no host name (a URL, spaces)."""
    for name in extra:
        if "/" in name or any(c.isspace() for c in name):
            raise UsageError(f"--allowed-hosts takes host names separated by commas "
                             f"(head,head.example.org,10.0.0.*), got {name!r}")


def allowed_hosts(host: str, extra: Sequence[str] = ()) -> list[str] | None:
    """`mlflow server --allowed-hosts` for a server bound to `host`: MLflow 3 answers 403
    ("Invalid Host header") to a request whose Host header it does not know, against DNS
    rebinding. Allowed: MLflow's defaults (localhost, private IPs) plus, for a server other
    machines reach, this machine's names and addresses, plus `extra`, each at any port; `*`
    allows every name. None where MLflow's defaults (or the user's
    $MLFLOW_SERVER_ALLOWED_HOSTS) stand: a loopback bind and nothing extra, or an MLflow
    without the check."""
    defaults = mlflow_default_hosts()
    local = host in LOOPBACK or bool(os.environ.get("MLFLOW_SERVER_ALLOWED_HOSTS"))
    if defaults is None or (local and not extra):
        return None
    if "*" in extra:
        return ["*"]
    names = [*extra, *([] if host in LOOPBACK else machine_names(host))]
    # a Host header carries the port (head:5000): a bare name is allowed at any port
    patterns = [p for name in dict.fromkeys(n for n in names for n in (n, n.lower()))
                for p in ((name,) if ":" in name else (name, f"{name}:*"))]
    return list(dict.fromkeys([*defaults, *patterns]))


def server_command(store: str, artifacts: Path, *, host: str, port: int, auth: bool,
                   workers: int = SERVER_WORKERS,
                   allowed: Sequence[str] | None = None) -> list[str]:
    """The `mlflow server` command line of a shared server: runs in `store`, artifacts
    uploaded to and served from `artifacts`; `allowed`: its `--allowed-hosts`."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
               "--serve-artifacts", "--artifacts-destination", str(artifacts.absolute()),
               "--host", host, "--port", str(port), "--workers", str(workers)]
    if allowed:
        command += ["--allowed-hosts", ",".join(allowed)]
    return command + (["--app-name", AUTH_APP] if auth else [])


def start_server(store: str, artifacts: Path, *, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT, auth: bool = False, auth_db: str | None = None,
                 workers: int = SERVER_WORKERS, allowed: Sequence[str] = (),
                 starting: Callable[[], None] | None = None) -> UiServer:
    """Check everything that can be checked in this process, then (`starting()`: say so)
    start the server and return once `/health` answers (a context manager that stops it).
    `allowed`: Host names to accept besides those of `allowed_hosts`."""
    check_exposure(host, auth)
    check_allowed(allowed)
    check_servable(store, ui=False)
    check_driver(store)
    check_reachable(store)  # a database that is down: seconds, not SQLAlchemy's silent ~100 s
    if artifacts.exists() and not artifacts.is_dir():  # mkdir would say only "File exists"
        raise UsageError(f"--artifacts {artifacts} is a file; give a folder")
    if auth:
        auth_db = auth_db or f"sqlite:///{Path('basic_auth.db').absolute()}"
        check_auth(auth_db)
    if starting is not None:
        starting()
    try:
        artifacts.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--artifacts {artifacts}: cannot create it ({err.strerror})") from None
    port = pick_port(host, port)
    command = server_command(store, artifacts, host=host, port=port, auth=auth, workers=workers,
                             allowed=allowed_hosts(host, allowed))
    if auth:
        return launch_with_auth(command, auth_db, host=host, port=port)
    return launch(command, host=host, port=port)


def serve(store: str, artifacts: Path, *, host: str, port: int, auth: bool,
          auth_db: str | None, workers: int, allowed: str | None = None,
          echo: Callable[[str], None] = print) -> None:
    """`cifarctl server`: check, start, say where, serve until Ctrl-C/SIGTERM, stop cleanly.
    `allowed`: `--allowed-hosts`, names separated by commas."""
    extra = [name.strip() for name in (allowed or "").split(",") if name.strip()]

    def starting() -> None:  # once every check passed
        echo(f"starting a shared MLflow server on {host}:{port}: runs in "
             f"{store.split('@')[-1]}, artifacts in {artifacts} (seconds) ...")

    def announce(server: UiServer) -> None:
        url = public_url(server.url, host)
        echo(f"ready: {url}  (pass --tracking-uri {url}, or set MLFLOW_TRACKING_URI, on every "
             f"machine)")
        if auth:
            echo("  basic auth on: clients set MLFLOW_TRACKING_USERNAME and "
                 "MLFLOW_TRACKING_PASSWORD")
        echo(f"  server log: {server.log}; Ctrl-C stops the server")

    serve_until_stopped(lambda: start_server(store, artifacts, host=host, port=port, auth=auth,
                                             auth_db=auth_db, workers=workers,
                                             allowed=extra, starting=starting),
                        announce, echo)
