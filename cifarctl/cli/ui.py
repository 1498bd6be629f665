"""`cifarctl ui`: browse every run in the MLflow UI, served from the store `train` writes.

    $ cifarctl ui                       # http://127.0.0.1:5000 until Ctrl-C
    $ cifarctl ui --experiment lt100 --open

The server (`cifarctl.ui`) runs MLflow in its own process: this module imports nothing heavy.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cifarctl.cli.options import Port, TrackingUri
from cifarctl.ui import DEFAULT_HOST, DEFAULT_PORT


def ui(
    port: Port = DEFAULT_PORT,
    host: Annotated[str, typer.Option(
        help="Address to listen on: 127.0.0.1 is this machine only, 0.0.0.0 every network "
             "interface (anyone who can reach it sees your runs).")] = DEFAULT_HOST,
    open_: Annotated[bool, typer.Option("--open", help="Open the UI in your web browser.")
                     ] = False,
    experiment: Annotated[str | None, typer.Option(
        help="Print (and --open) this experiment's runs page instead of the home page.")
                          ] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Browse your runs in the MLflow UI (Ctrl-C stops it).

    Examples:

      cifarctl ui

      cifarctl ui --port 5001 --experiment lt100 --open

      cifarctl ui --tracking-uri sqlite:///other/mlflow.db
    """
    from cifarctl.ui import serve

    serve(tracking_uri, host=host, port=port, experiment=experiment, open_browser=open_,
          echo=typer.echo)
