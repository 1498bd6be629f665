"""The one exception type users see, and its two flavours.

    raise UsageError("unknown config key 'optim.lrr' (did you mean 'optim.lr'?)")
    raise UsageError(f"cannot read checkpoint {path}: {first_line(err)}") from None

Every error a person can cause or fix ends here: the CLI prints `error: <message>` on one
line and exits with `exit_code` (2 for bad input, 1 for a failure of the run itself),
never with a traceback (STYLE principle 11).
"""

import difflib
from collections.abc import Iterable


class CifarctlError(Exception):
    """A failure with a message written for the user. Exit code 1."""

    exit_code = 1


class UsageError(CifarctlError):
    """Bad input: config key or value, CLI argument, missing or corrupt dataset. Exit code 2."""

    exit_code = 2


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`" (did you mean 'optim.lr'?)"` for the closest choice, or `""` when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, for a one-line error; its type's name when
    the message is empty.

        first_line(OSError("disk full\\n  at ..."))   # "disk full"
        first_line(KeyError())                       # "KeyError"

    A string `message` attribute (MLflow's exceptions carry one) is preferred to `str(err)`,
    which some libraries decorate.
    """
    message = getattr(err, "message", None)
    text = message if isinstance(message, str) else str(err)
    lines = text.strip().splitlines()
    return lines[0] if lines else type(err).__name__
