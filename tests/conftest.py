"""Fixtures every test gets: no API keys, and a ledger that is never the user's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Remove every ``*_API_KEY`` variable and point the ledger at a temporary file."""
    for name in list(os.environ):
        if name.endswith("_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AOE_DB", str(tmp_path / "aoe-test.db"))
    monkeypatch.delenv("AOE_DEBUG", raising=False)
