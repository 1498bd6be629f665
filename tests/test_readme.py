"""The README stays true: every config key with its default, every command it shows exists.

    CIFARCTL_UPDATE_DOCS=1 pytest tests/test_readme.py   # rewrite its config table from the code
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifarctl.cli import app
from cifarctl.config import field_help
from cifarctl.models import list_models

README_PATH = Path(__file__).resolve().parents[1] / "README.md"
README = README_PATH.read_text()
# The config table: its marker comment, header and rows, up to the blank line after it
TABLE = re.compile(r"(<!-- config-table:[^\n]*-->\n\| key \| default \| meaning \|\n\|---\|---\|"
                   r"---\|\n)((?:\|[^\n]*\n)*)")


@pytest.mark.parametrize("key, default", [(k, d) for k, d, _ in field_help()])
def test_every_config_key_is_in_the_table_with_its_default(key, default):
    row = re.search(rf"^\| `{re.escape(key)}` \| `([^`]*)` \|", README, re.MULTILINE)
    assert row, f"README config table lacks {key}"
    assert row.group(1) == str(default), f"{key}: README says {row.group(1)}, code {default}"


def test_the_config_table_is_what_config_keys_prints():
    """Row for row `cifarctl config keys --json`: key, default (as `str` shows it, like the
    command's table: None, True, [160, 180]) and help;
    CIFARCTL_UPDATE_DOCS=1 writes the table from it instead."""
    result = CliRunner().invoke(app, ["config", "keys", "--json"])
    assert result.exit_code == 0, result.output
    rows = "".join(f"| `{r['key']}` | `{r['default']}` | {r['help']} |\n"
                   for r in json.loads(result.stdout))
    found = TABLE.search(README)
    assert found, "README has no config table under its <!-- config-table: --> marker"
    if os.environ.get("CIFARCTL_UPDATE_DOCS") == "1":
        README_PATH.write_text(README[:found.start(2)] + rows + README[found.end(2):])
        return
    assert found.group(2) == rows, "README's config table is stale: CIFARCTL_UPDATE_DOCS=1 " \
                                   "pytest tests/test_readme.py rewrites it"


def test_every_model_is_listed():
    for name in list_models():
        stem = re.sub(r"\d+$", "", name)
        assert f"`{name}`" in README or stem == "resnet", name


def test_quick_start_names_both_commands():
    assert "make demo" in README and "make test" in README
