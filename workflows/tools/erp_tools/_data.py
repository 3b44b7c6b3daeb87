"""Reading the CSV extracts (a stand-in for the ERP's database)."""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "data"  # workflows/data


@lru_cache(maxsize=8)
def rows(name: str) -> tuple[dict[str, str], ...]:
    """Every row of ``data/<name>.csv`` as a dict of strings."""
    with (DATA / f"{name}.csv").open(encoding="utf-8", newline="") as handle:
        return tuple(csv.DictReader(handle))
