"""The `cifarctl` command: a thin Typer root over the library (STYLE principle 5).

    $ cifarctl --help

Each subcommand lives in its own module here; they import torch, torchvision and mlflow
inside their bodies only, so `--help` and `--version` stay fast. Any `CifarctlError`
raised below becomes one line on stderr and the error's exit code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from cifarctl import __version__
from cifarctl.errors import CifarctlError

# Options that people carry over from another command, and what this one does instead:
# click's nearest-name guess ("Possible options: --set") would mislead.
_INSTEAD = {
    ("sweep", "--resume"): "a sweep resumes when the same command runs again (FINISHED "
                           "trials are skipped, the others continue in their runs): drop "
                           "--resume",
}


def _usage_line(err: UsageError) -> str:
    """A command-line mistake as one line: what was wrong, and where the help is."""
    message = err.format_message().rstrip(".")
    command = err.ctx.info_name if err.ctx is not None else None
    instead = _INSTEAD.get((command, getattr(err, "option_name", None)))
    if instead is not None:
        message = f"no such option: {err.option_name}: {instead}"
    where = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
    return f"error: {message[:1].lower()}{message[1:]}{where}"


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """The project's errors, and the parser's (a bad flag value, an unknown option), as one
    `error: ...` line and an exit code: no boxed help text for a script's log to wrap."""
    try:
        yield
    except CifarctlError as err:
        typer.echo(f"error: {err}", err=True)
        # typer.Exit, not click's: typer 0.29 carries its own copy of click
        raise typer.Exit(err.exit_code) from None
    except NoArgsIsHelpError:  # `cifarctl train` alone: its help, as asked for
        raise
    except UsageError as err:
        typer.echo(_usage_line(err), err=True)
        raise typer.Exit(2) from None


class _FriendlyErrors(TyperGroup):
    """One-line errors for every subcommand (`_one_line_errors`)."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _one_line_errors():  # the root's own options and the subcommand name
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with _one_line_errors():  # the subcommand's arguments and its run
            return super().invoke(ctx)


def _no_value_shown_for_flags() -> None:
    """typer 0.29's help prints `<bool>` beside on/off flags as if they took a value; they
    take none (`--compile`, not `--compile true`), so show nothing there. Older typers,
    without `display_type_rich`, never printed it."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_flags_hidden", False):
        return

    def display_type_rich(self: TyperOption, ctx: object) -> str | None:
        return None if self.is_flag and self.metavar is None else shown(self, ctx)

    display_type_rich._flags_hidden = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_no_value_shown_for_flags()

app = typer.Typer(cls=_FriendlyErrors, name="cifarctl", no_args_is_help=True,
                  help="Train, sweep, evaluate and compare CIFAR-10 models, tracked in MLflow.",
                  add_completion=False, pretty_exceptions_show_locals=False,
                  context_settings={"help_option_names": ["-h", "--help"]})


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"cifarctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True,
                     help="Print the version."),
    ] = False,
) -> None:
    """Train, sweep, evaluate and compare CIFAR-10 models, tracked in MLflow."""


def main() -> None:
    """Console-script entry point."""
    app()


# Subcommands are registered after the root exists; their modules import nothing heavy.
from cifarctl.cli import config, data, theory  # noqa: E402
from cifarctl.cli import eval as eval_cmd  # noqa: E402
from cifarctl.cli import report as report_cmd  # noqa: E402
from cifarctl.cli import server as server_cmd  # noqa: E402
from cifarctl.cli import sweep as sweep_cmd  # noqa: E402
from cifarctl.cli import train as train_cmd  # noqa: E402
from cifarctl.cli import ui as ui_cmd  # noqa: E402

app.add_typer(data.app, name="data",
              short_help="Datasets: download, import, synth, info, list, rm.")
app.command(no_args_is_help=True, epilog=train_cmd.EPILOG)(train_cmd.train)
app.add_typer(config.app, name="config", short_help="The run config: every key, its default.")
app.add_typer(theory.app, name="theory",
              short_help="The write-up's theory: conv as a matrix, ReLU nets.")
app.command(no_args_is_help=True)(sweep_cmd.sweep)
app.command()(ui_cmd.ui)
app.command(no_args_is_help=True)(server_cmd.server)
app.command("eval", no_args_is_help=True)(eval_cmd.eval_command)
app.command("report")(report_cmd.report)
