"""`cifarctl config keys`: every key of the run config, with its default and meaning.

    $ cifarctl config keys
    $ cifarctl config keys --json | jq -r '.[].key'

The table is `cifarctl.config.field_help()`, the one source of the keys' help text; the
README's config table is this command's output (tests/test_readme.py holds them equal).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(help="The run configuration: its keys, their defaults and meanings.",
                  no_args_is_help=True)


@app.command("keys")
def keys_command(
    *,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print a JSON list of {key, default, help} objects, nothing else.")
                       ] = False,
) -> None:
    """Every config key with its default and meaning.

    Set keys in a --config YAML file (sections model, data, optim, loss, run) or with
    --set section.key=value (a key unique across sections may drop its section: --set
    seed=3); `cifarctl train`'s flags win over --set, which wins over the file.
    """
    from cifarctl.config import field_help

    rows = field_help()
    if as_json:
        typer.echo(json.dumps([{"key": k, "default": d, "help": h} for k, d, h in rows]))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{len(rows)} config keys")
    for column in ("key", "default", "meaning"):
        table.add_column(column, no_wrap=column != "meaning")  # a key to copy, whole
    for key, default, text in rows:  # Text: `[160, 180]` is a value, not rich markup
        table.add_row(Text(key), Text(str(default)), Text(text))
    Console().print(table)
