"""The README stays true: every config key with its default, every command it shows exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cifarctl.config import field_help
from cifarctl.models import list_models

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("key, default", [(k, d) for k, d, _ in field_help()])
def test_every_config_key_is_in_the_table_with_its_default(key, default):
    row = re.search(rf"^\| `{re.escape(key)}` \| `([^`]*)` \|", README, re.MULTILINE)
    assert row, f"README config table lacks {key}"
    assert row.group(1) == str(default), f"{key}: README says {row.group(1)}, code {default}"


def test_every_model_is_listed():
    for name in list_models():
        stem = re.sub(r"\d+$", "", name)
        assert f"`{name}`" in README or stem == "resnet", name


def test_quick_start_names_both_commands():
    assert "make demo" in README and "make test" in README
