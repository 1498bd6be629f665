"""Options that several commands share, each declared once with one help text.

    def train(*, tracking_uri: TrackingUri = None, checkpoints: Checkpoints = CHECKPOINTS): ...
    Backend = choice(("local", "ray"), "--backend must be one of {choices}, got {value!r}",
                     help="Where trials run.")

Choices are `Literal` types, so `--help` shows them (`<local|ray>`); `choice` parses the
value and fails with the very line the library's own check of it prints (`error: --split
must be test or val, got 'train'`, exit 2), not the parser's wording.

`report -e` (repeatable, a filter) and `ui --experiment` (which page to open) are other
options than `train`/`sweep --experiment` (where runs go) and keep their own declarations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from cifarctl.errors import UsageError

CHECKPOINTS = Path("checkpoints")  # the default folder of train, sweep and eval

TrackingUri = Annotated[str | None, typer.Option(
    help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")]
Experiment = Annotated[str | None, typer.Option(
    help="MLflow experiment (default: the config's run.experiment, or the sweep spec's).")]
Checkpoints = Annotated[Path, typer.Option(help="Folder of checkpoints, one subfolder per run.")]
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE",
    help="Override a config key, e.g. --set optim.steps='[40, 45]' (repeatable).")]
Device = Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")]
Quiet = Annotated[bool, typer.Option(
    "--quiet", "-q", help="No progress output; the summary still prints.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object, nothing else.")]
Port = Annotated[int, typer.Option("--port", "-p", min=0, max=65535, metavar="PORT",
                                   help="Port to serve on; 0 = any free port.")]


def choice(values: tuple[str, ...], message: str, *names: str, optional: bool = False,
           **option: Any) -> Any:
    """`Annotated[Literal[values], typer.Option(*names, **option)]` whose parser accepts
    `values` only and raises `UsageError(message)` for anything else; `message` may use
    `{value!r}` and `{choices}` (the values joined by commas). `optional`: the default is
    None."""
    def parse(value: str) -> str:
        if value not in values:
            raise UsageError(message.format(value=value, choices=", ".join(values)))
        return value

    kind: Any = Literal[values]  # Literal[("a", "b")] is Literal["a", "b"]
    declared = typer.Option(*names, parser=parse, **option)
    return Annotated[kind | None if optional else kind, declared]


def warn(text: str) -> None:
    """A `warning: ...` line on stderr: what the library's `warn=` callbacks print."""
    typer.echo(f"warning: {text}", err=True)
