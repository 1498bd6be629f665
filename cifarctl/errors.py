"""The one exception type users see, and its two flavours.

    raise UsageError("unknown config key 'optim.lrr' (did you mean 'optim.lr'?)")

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
    """The first line of an exception's message (its type's name when it has none): what a
    one-line error shows of a library's multi-line message."""
    text = str(getattr(err, "message", err)).strip()
    return text.splitlines()[0] if text else type(err).__name__
