"""`first_line`: the one-line reason every error message quotes, from real exceptions."""

from __future__ import annotations

import json

import pytest

from cifarctl.errors import UsageError, first_line


def test_first_line_of_real_exceptions(tmp_path):
    with pytest.raises(OSError) as missing:
        (tmp_path / "absent.pt").open("rb")
    assert first_line(missing.value) == f"[Errno 2] No such file or directory: " \
                                        f"'{tmp_path / 'absent.pt'}'"
    with pytest.raises(json.JSONDecodeError) as bad_json:
        json.loads("{not json")
    assert first_line(bad_json.value) == "Expecting property name enclosed in double quotes: " \
                                         "line 1 column 2 (char 1)"


def test_first_line_keeps_only_the_first_line_and_names_silent_errors():
    assert first_line(RuntimeError("\n  disk full\ntraceback details\n")) == "disk full"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(ValueError("   ")) == "ValueError"
    assert first_line(UsageError("unknown loss 'x'")) == "unknown loss 'x'"


def test_first_line_prefers_mlflow_messages():
    from mlflow.exceptions import MlflowException

    err = MlflowException("Run 'abc' not found\nsee the server log", error_code="NOT_FOUND")
    assert first_line(err) == "Run 'abc' not found"

    class Decorated(Exception):  # str() with decoration, the text itself in `message`
        message = "the store is read-only"

        def __str__(self) -> str:
            return "(sqlite3.OperationalError) attempt to write a readonly database"

    assert first_line(Decorated()) == "the store is read-only"
