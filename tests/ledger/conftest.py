"""The PostgreSQL cluster the ledger tests share (one per session, a database per test)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aoe.ledger.store import Target
from ledger.pg import PgCluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """The URL of a fresh, empty database on the session's cluster."""
    return pg_cluster.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """Where a backend-neutral test keeps its ledger: a fresh SQLite file, then a fresh
    PostgreSQL database (the same test runs against both)."""
    if request.param == "sqlite":
        return tmp_path / "deep" / "dir" / "aoe.db"
    return str(request.getfixturevalue("pg_url"))


def execute(db: Target, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement (``?`` placeholders) on the ledger behind the aoe code's back, in
    its own committed transaction, the way another tool or a crash would leave it."""
    if isinstance(db, str):
        with psycopg.connect(db, autocommit=True) as conn:
            cur = conn.execute(sql.replace("?", "%s"), tuple(params))
            return list(cur.fetchall()) if cur.description else []
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        return list(conn.execute(sql, tuple(params)).fetchall())
