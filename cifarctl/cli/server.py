"""`cifarctl server`: the MLflow tracking server a team or a Ray cluster shares.

    $ cifarctl server --store postgresql://mlflow@127.0.0.1/mlflow --artifacts /srv/artifacts
    $ MLFLOW_AUTH_ADMIN_PASSWORD=... cifarctl server --store ... --host 0.0.0.0 --auth

The server (`cifarctl.server`) runs MLflow in its own process: this module imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cifarctl.cli.options import Port
from cifarctl.server import SERVER_WORKERS
from cifarctl.ui import DEFAULT_HOST, DEFAULT_PORT


def server(
    store: Annotated[str, typer.Option(
        metavar="URI", help="Where runs are kept: postgresql://USER:PASSWORD@HOST/DB "
                            "(needs psycopg: the server extra of cifarctl), or sqlite:///PATH.")],
    artifacts: Annotated[Path, typer.Option(
        metavar="DIR", help="Folder the server keeps every run's artifacts in (checkpoints, "
                            "figures); clients reach them through the server.")],
    host: Annotated[str, typer.Option(
        help="Address to listen on: 127.0.0.1 is this machine only; any other needs --auth.")
                    ] = DEFAULT_HOST,
    port: Port = DEFAULT_PORT,
    auth: Annotated[bool, typer.Option(
        "--auth", help="MLflow's basic-auth app: users and passwords (admin password from "
                       "$MLFLOW_AUTH_ADMIN_PASSWORD on first start).")] = False,
    auth_db: Annotated[str | None, typer.Option(
        metavar="URI", help="With --auth: where users are kept (default "
                            "sqlite:///basic_auth.db here).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Server worker processes.")
                       ] = SERVER_WORKERS,
    allowed_hosts: Annotated[str | None, typer.Option(
        metavar="NAMES", help="Host names clients may reach the server by, comma-separated "
                              "(head.example.org,10.0.0.*; '*': any), besides localhost, "
                              "private IPs and, with a --host other than loopback, this "
                              "machine's own names and addresses. MLflow answers requests "
                              "for other names 403 (against DNS rebinding).")
                             ] = None,
) -> None:
    """Serve a tracking store for many machines: runs, artifacts and their checkpoints.

    Examples:

      cifarctl server --store postgresql://mlflow@127.0.0.1/mlflow --artifacts /srv/art

      cifarctl server --store postgresql://... --artifacts /srv/art --host 0.0.0.0 --auth

      cifarctl server ... --host 0.0.0.0 --auth --allowed-hosts mlflow.example.org
    """
    from cifarctl.server import serve

    serve(store, artifacts, host=host, port=port, auth=auth, auth_db=auth_db, workers=workers,
          allowed=allowed_hosts, echo=typer.echo)
