"""Which MLflow store a run goes to, and whether it can be reached, without importing MLflow.

    uri = resolve_tracking_uri(None)   # 'sqlite:////home/me/project/mlflow.db'
    check_reachable(uri)               # a UsageError in seconds if a server is down

Order: an explicit URI (`--tracking-uri`), then `$MLFLOW_TRACKING_URI`, then
`sqlite:///mlflow.db` in the working directory, with artifacts in `./mlruns` beside it:
the layout `mlflow ui` / `mlflow server --backend-store-uri sqlite:///mlflow.db
--default-artifact-root ./mlruns` reads when started in that directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cifarctl.errors import UsageError

DEFAULT_DB = "mlflow.db"  # sqlite file in the working directory, as MLflow 3's own default
ARTIFACTS_DIR = "mlruns"  # beside the database, as `mlflow server --default-artifact-root`
PROBE_TIMEOUT_S = 3.0  # MLflow's own HTTP client retries for minutes before it gives up

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use, with sqlite paths made absolute.

        resolve_tracking_uri("sqlite:///runs.db")  # 'sqlite:////abs/cwd/runs.db'

    Absolute paths keep one process from mixing stores when its working directory changes
    (MLflow caches one store per URI string). A bare `*.db` path means a sqlite file.
    """
    uri = (uri or os.environ.get("MLFLOW_TRACKING_URI") or "").strip()
    if not uri:
        uri = f"sqlite:///{DEFAULT_DB}"
    if not _SCHEME.match(uri) and uri.endswith((".db", ".sqlite")):
        uri = f"sqlite:///{uri}"
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    db = sqlite_path(uri)
    if db is not None:
        return f"sqlite:///{db}"
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The absolute database file of a `sqlite:///` URI; None for other stores (and :memory:)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path).expanduser().absolute()


def artifact_root(uri: str) -> Path | None:
    """Where a sqlite store's experiments keep artifacts: `mlruns/` beside the database.

    None for servers and other databases: their own default artifact root applies.
    """
    db = sqlite_path(uri)
    return None if db is None else db.parent / ARTIFACTS_DIR


def check_reachable(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise one clear UsageError, within about `timeout` seconds, if an HTTP server is down.

        check_reachable("http://127.0.0.1:5000")

    MLflow's client would retry for minutes before failing; a GET on `/health` answers at
    once. Any HTTP answer below 500 counts as reachable (an auth proxy may say 401 there).
    Non-HTTP stores (sqlite) are always "reachable"; opening them reports their own errors.
    """
    if not uri.startswith(("http://", "https://")):
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
            return
    except urllib.error.HTTPError as err:
        if err.code < 500:
            return
        reason = f"HTTP {err.code} on /health"
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = str(getattr(err, "reason", err))
    raise UsageError(f"cannot reach MLflow tracking server at {uri}: {reason}; {hint}")
