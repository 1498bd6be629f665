"""Which MLflow store a run goes to, whether it can be reached and whether it holds runs,
without importing MLflow.

    uri = resolve_tracking_uri(None)   # 'sqlite:////home/me/project/mlflow.db'
    check_reachable(uri)               # a UsageError in seconds if a server is down
    check_store(uri)                   # a UsageError if nothing was ever tracked there

Order: an explicit URI (`--tracking-uri`), then `$MLFLOW_TRACKING_URI`, then
`sqlite:///mlflow.db` in the working directory, with artifacts in `./mlruns` beside it:
the layout `mlflow ui` / `mlflow server --backend-store-uri sqlite:///mlflow.db
--default-artifact-root ./mlruns` reads when started in that directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cifarctl.errors import UsageError, did_you_mean

DEFAULT_DB = "mlflow.db"  # sqlite file in the working directory, as MLflow 3's own default
ARTIFACTS_DIR = "mlruns"  # beside the database, as `mlflow server --default-artifact-root`
PROBE_TIMEOUT_S = 3.0  # MLflow's own HTTP client retries for minutes before it gives up
# The cheapest request that passes the checks every tracking call passes (/health skips them)
ACCESS_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"
INVALID_HOST = "Invalid Host header"  # MLflow 3's 403 for a Host name it does not allow

SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def is_server(uri: str) -> bool:
    """A tracking server (`http://`, `https://`), not a database file or URL."""
    return uri.startswith(("http://", "https://"))


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use, with sqlite paths made absolute (`sqlite:////abs/cwd/runs.db`)
    so that one process cannot mix stores when its working directory changes (MLflow caches
    one store per URI string). A bare `*.db` path means a sqlite file."""
    uri = (uri or os.environ.get("MLFLOW_TRACKING_URI") or "").strip() or f"sqlite:///{DEFAULT_DB}"
    if not SCHEME.match(uri) and uri.endswith((".db", ".sqlite")):
        uri = f"sqlite:///{uri}"
    if is_server(uri):
        return uri.rstrip("/")
    db = sqlite_path(uri)
    return uri if db is None else f"sqlite:///{db}"


def database_driver(uri: str) -> str | None:
    """The Python module SQLAlchemy needs for a PostgreSQL URI (None for other stores):
    `postgresql+DRIVER://` names it; a bare `postgresql://` is psycopg (3) from SQLAlchemy
    2.1 on, psycopg2 before."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    dialect, _, driver = scheme.partition("+")
    if dialect != "postgresql":
        return None
    if driver:
        return driver
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(x) for x in version("sqlalchemy").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return "psycopg"
    return "psycopg" if (major, minor) >= (2, 1) else "psycopg2"


def check_driver(uri: str) -> None:
    """UsageError, naming what to install, when a database store's driver is missing
    (SQLAlchemy would fail deep inside MLflow with a 244-line ModuleNotFoundError)."""
    import importlib.util

    driver = database_driver(uri)
    if driver is not None and importlib.util.find_spec(driver) is None:
        package = "psycopg2-binary" if driver == "psycopg2" else f"{driver}[binary]"
        raise UsageError(f"{uri.split('://', 1)[0]}:// stores need the PostgreSQL driver "
                         f"{driver}, which is not installed: pip install 'cifarctl[server]' "
                         f"(or pip install {package})")


def sqlite_path(uri: str) -> Path | None:
    """The absolute database file of a `sqlite:///` URI; None for other stores (and :memory:)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path).expanduser().absolute()


def artifact_root(uri: str) -> Path | None:
    """Where a sqlite store's experiments keep artifacts: `mlruns/` beside the database;
    None for servers and other databases (their own default artifact root applies)."""
    db = sqlite_path(uri)
    return None if db is None else db.parent / ARTIFACTS_DIR


def refusal(uri: str | None, status: int, body: str) -> str | None:
    """The one line for a tracking server (at `uri`, when known) that refused a request this
    client must fix: MLflow 3's guard against DNS rebinding refusing the Host name it was
    called by (403), no or wrong credentials (401), a user without the permission (403).
    None for any other answer."""
    import urllib.parse

    where = f"the tracking server at {uri}" if uri else "the tracking server"
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    login = "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    if status == 403 and INVALID_HOST in body:
        host = (urllib.parse.urlparse(uri).hostname if uri else None) or "HOST"
        return (f"{where} refuses to be called {host} (HTTP 403: MLflow's guard against DNS "
                f"rebinding); start it with `cifarctl server --allowed-hosts {host}`, or "
                f"reach it by a private IP address")
    if status == 401:
        whose = (f"the credentials of user {user}" if user and _credentials()
                 else "a request without credentials")
        return f"{where} refused {whose} (401); {login}"
    if status == 403:
        said = " ".join(body.split())[:80] or "Forbidden"  # one line, whatever a proxy says
        return (f"{where} denied user {user or '(none)'} this request (403: {said}); ask its "
                f"admin for the permission, or log in as another user: {login}")
    return None


def _credentials() -> dict[str, str]:
    """The Authorization header MLflow's client sends from the environment (basic auth, else
    a bearer token); empty for none."""
    import base64

    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        login = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {login}"}
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def check_reachable(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """One clear UsageError, within about `timeout` seconds, if an HTTP server is down (a GET
    on `/health` answers at once), is no MLflow server (404 there: another web server on
    that port, whose 404s MLflow would raise as a traceback at the first request) or refuses
    this client (`refusal`, asked of one cheap tracking request). Any other answer below 500
    counts as reachable. A PostgreSQL store's host and port must accept a connection; other
    stores (sqlite) report their own errors when opened."""
    if database_driver(uri) is not None:
        _check_database_port(uri, timeout)
    if not is_server(uri):
        return
    import ssl  # here, not at the top: `cifarctl --help` imports this module (issue 2)
    import urllib.error
    import urllib.request

    hint = "start it or pass --tracking-uri"
    context = None
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        context = ssl._create_unverified_context()  # the user's explicit opt-out, as MLflow's
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=timeout, context=context):
            return _check_access(uri, timeout, context)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise UsageError(f"{uri} answered, but it is not an MLflow tracking server (HTTP "
                             f"404 on /health); check the host and port of --tracking-uri "
                             f"(or $MLFLOW_TRACKING_URI)") from None
        if err.code < 500:
            return _check_access(uri, timeout, context)
        reason = f"HTTP {err.code} on /health"
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = str(getattr(err, "reason", err))
    raise UsageError(f"cannot reach MLflow tracking server at {uri}: {reason}; {hint}")


def _check_access(uri: str, timeout: float, context) -> None:
    """UsageError when a server that answers /health refuses this client's tracking calls
    (`refusal`), asked with the credentials MLflow's client would send; every other answer
    is left to those calls, and so is a login this module cannot make (an auth plugin)."""
    import urllib.error
    import urllib.request

    if os.environ.get("MLFLOW_TRACKING_AUTH") or os.environ.get("MLFLOW_TRACKING_AWS_SIGV4"):
        return
    request = urllib.request.Request(uri + ACCESS_PROBE, headers=_credentials())
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context):
            return
    except urllib.error.HTTPError as err:
        message = refusal(uri, err.code, err.read(4096).decode(errors="replace"))
    except (urllib.error.URLError, OSError, ValueError):
        return
    if message is not None:
        raise UsageError(message)


def mlflow_default_hosts() -> list[str] | None:
    """The Host names MLflow's server answers by default (localhost, private IPs), which
    `cifarctl server --allowed-hosts` extends; None for an MLflow without that guard. The one
    function here that imports MLflow (~2 s): only a starting server calls it."""
    try:
        from mlflow.server.security_utils import get_default_allowed_hosts
    except ImportError:  # MLflow before its DNS-rebinding guard (3.x)
        return None
    return get_default_allowed_hosts()


def _check_database_port(uri: str, timeout: float) -> None:
    """A PostgreSQL store whose host refuses or ignores connections: one UsageError within
    `timeout`, where SQLAlchemy under MLflow retried silently for ~100 s. A socket path
    (no host) or a host that answers is left to the driver (a wrong password says so)."""
    import socket
    import urllib.parse

    parsed = urllib.parse.urlparse(uri)
    try:
        host, port = parsed.hostname, parsed.port or 5432
    except ValueError:  # a port that is no number: the driver's own message
        return
    if not host:
        return
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__  # a timeout has no strerror
        where = f"{parsed.scheme}://{host}:{port}"
        raise UsageError(f"cannot reach the database at {where} ({reason}); start it, or pass "
                         f"another --tracking-uri / --store") from None


# The first 16 bytes of every SQLite 3 database (sqlite.org/fileformat.html, 1.3).
SQLITE_HEADER = b"SQLite format 3\x00"


def check_store(tracking_uri: str) -> None:
    """UsageError if a sqlite store's file is missing or no MLflow store, before `report`,
    `eval` or `ui` reads it: MLflow would create an empty store (and its folders) at a
    mistyped path, and readers would then find nothing (`mlflow server` an empty UI)."""
    db = sqlite_path(tracking_uri)
    if db is None:
        return
    fix = "point --tracking-uri (or $MLFLOW_TRACKING_URI) at the store your runs went to"
    if not db.is_file():
        raise UsageError(f"no MLflow store at {db}: nothing was tracked there yet; run "
                         f"`cifarctl train` here first, or {fix}")
    if not _is_sqlite(db):
        raise UsageError(f"{db} is not an SQLite database, so not an MLflow store; {fix}")
    if not _is_mlflow_schema(db):
        raise UsageError(f"{db} is an SQLite database of something else (no MLflow tables), "
                         f"which MLflow would add its tables to; {fix}")


def check_experiment(tracking_uri: str, name: str) -> None:
    """UsageError, listing the experiments, if an SQLite store has no active one `name`
    (other stores are asked once their server answers: `ui.experiment_page`)."""
    from cifarctl.tracking.sqlite_reader import experiment_names

    db = sqlite_path(tracking_uri)
    names = experiment_names(db) if db is not None and db.is_file() else None
    if names is not None and name not in names:
        raise UsageError(f"no experiment {name!r} in {tracking_uri}; experiments: "
                         f"{', '.join(names) or 'none yet'}{did_you_mean(name, names)}")


def _is_mlflow_schema(db: Path) -> bool:
    """Whether an SQLite file is empty (a store about to be made) or has MLflow's tables
    (its `experiments`, or the `alembic_version` of its migrations)."""
    from cifarctl.tracking.sqlite_reader import rows

    found = rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")
    if found is None:
        return True  # unreadable or locked: left to MLflow, which says why
    tables = {row[0] for row in found}
    return not tables or bool({"experiments", "alembic_version"} & tables)


def _is_sqlite(db: Path) -> bool:
    """Whether `db` starts with SQLite's file header (an empty file is a new database)."""
    try:
        with db.open("rb") as file:
            head = file.read(len(SQLITE_HEADER))
    except OSError:
        return True  # unreadable: left to MLflow, which says why
    return not head or head == SQLITE_HEADER
